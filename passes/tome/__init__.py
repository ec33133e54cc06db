"""Token merging (ToMe) inside exported vision transformers."""

from onnxpress.passes.tome.tome import Tome

__all__ = ["Tome"]
