"""Marks a pass leaves on the nodes it builds for later passes to respect, stored in the
node's ``metadata_props`` so that they survive saving and loading."""

from __future__ import annotations

import onnx_ir as ir

#: model.meta key: what loading the model noted (a converted opset, ...), for the report
LOAD_NOTES = "onnxpress.load_notes"

#: the node computes an index path in float (e.g. ToMe's similarity scores, whose argmax
#: picks the tokens to merge): later passes must not quantize or approximate it
KEEP_FLOAT = "onnxpress.keep_float"


def keep_float(node: ir.Node, why: str) -> None:
    node.metadata_props[KEEP_FLOAT] = why


def kept_float(node: ir.Node) -> str | None:
    """Why ``node`` must stay in float, or None."""
    return node.metadata_props.get(KEEP_FLOAT)
