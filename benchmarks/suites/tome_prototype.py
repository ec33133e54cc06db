"""The naive prototype the ``tome`` suite measures the pass against: ToMe applied to the
PyTorch ViT (the tests' reference forward, :mod:`onnxpress.models.tome_reference`: argsort,
gather, scatter_reduce, a token-size tensor, proportional attention) and exported by the
dynamo exporter, with nothing done to the exported graph.

Exported in a child process (torch must not load where ONNX Runtime is timed) and cached
per model, ``r`` and torch version. For a zoo ViT the unmerged model is the zoo's export
(:mod:`benchmarks.core.subjects`), with the same seeded weights. A smoke run uses
``vit_tiny_test`` (``onnxpress.models.vit``: 32x32 input, 17 tokens, 2 blocks; not in the
zoo), whose unmerged export the same child writes beside the prototype (by TorchScript,
which takes a second where torch.export takes ten; the tome pass reads both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core import subjects
from ..core.cache import version_tag
from ..core.child import run_child
from ..core.suite import Context

TINY = "vit_tiny_test"
INPUT = "pixel_values"


def prepare(model: str, ctx: Context, r: int) -> tuple[Path, Path, dict[str, np.ndarray],
                                                         list[dict[str, np.ndarray]]]:
    """(unmerged fp32 file, prototype file, comparison inputs, calibration batches)."""
    tiny = model == TINY
    entry = ctx.cache.file((model, f"prototype-r{r}", version_tag("torch")),
                           lambda path: run_child(export, name=model, target=str(path), r=r,
                                                  plain=str(_plain(path)) if tiny else "")
                           ["value"])
    if not tiny:
        subject = subjects.subject(model, ctx.cache)
        return subject.fp32, entry.path, subject.compare, subject.calibration
    images = np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)
    return (_plain(entry.path), entry.path, {INPUT: images[16:]},
            subjects.batched({INPUT: images[:16]}))


def _plain(prototype: Path) -> Path:
    return prototype.with_name(f"{prototype.stem}.unmerged.onnx")


# --- the child process (torch) -----------------------------------------------------------

def export(name: str, target: str, r: int, plain: str = "") -> dict[str, Any]:
    """Export ``name``'s prototype at constant ``r`` to ``target`` (and the unmerged module
    to ``plain``, when given)."""
    import torch

    from onnxpress.frontends.torch_export import export_onnx
    from onnxpress.models.tome_reference import reference

    if name == TINY:
        from onnxpress.models.vit import example_inputs, vit_tiny_test

        vit, example = vit_tiny_test(), example_inputs(2, 32)
    else:
        from onnxpress.models.zoo import ZOO

        vit, example = ZOO[name].build(), ZOO[name].example_inputs(2)
    if not hasattr(vit, "blocks"):
        raise ValueError(f"{name} is not a ViT: no prototype")

    class Prototype(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return reference(self.vit, pixel_values, [r] * len(self.vit.blocks))

    names = {"input_names": [INPUT], "output_names": ["logits"],
             "dynamic_axes": {INPUT: {0: "batch"}}}
    export_onnx(Prototype(), example, target, exporter="dynamo", **names)
    if plain:
        export_onnx(vit, example, plain, exporter="torchscript", **names)
    return {"model": name, "r": r}
