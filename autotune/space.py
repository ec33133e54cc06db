"""What a search may try on a model: one knob per pass family the graph offers, read from the
IR, and the pipeline string a setting of the knobs stands for.

- transformer blocks (``ir.attention``) -> ``tome(keep=x)``: the share of the blocks' MACs
  kept after token merging;
- channel groups a pruning can shrink (``ir.channel_groups``) -> ``prune(ratio=x)``, by
  MLP width (``structure=mlp``) where MatMul/Gemm widths can shrink (a transformer's MLP,
  also where tome finds no block, as in an encoder with a padding mask), else by Conv
  channels (``channel``);
- layers with a constant 2-D weight (``ir.layers``) -> ``lowrank(params=x)``: the share of
  their parameters kept;
- attention that ``fuse-for-ort`` fuses into ONNX Runtime's Attention
  (:mod:`onnxpress.ir.attention.fused`) -> ``prune(structure=head,ratio=x)``: the share of
  all heads removed;
- any of those -> ``int8`` (the preset for ONNX Runtime CPU) or float.

With calibration data, pruning ranks by ``importance=activation`` (what removing a channel
or head costs the outputs; on MiniLM at 30% of the MLP width with int8, Spearman 0.984
against 0.973 by magnitude), else by magnitude.

Each knob's first value is "off". A family the graph does not offer is named in a note with
the reason, so the report can say what was never tried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import onnx_ir as ir

from onnxpress.api import compile
from onnxpress.frontends.onnx_loader import ModelSource
from onnxpress.ir.attention.blocks import transformer_blocks
from onnxpress.ir.attention.fused import fused_blocks
from onnxpress.ir.channel_groups import channel_groups
from onnxpress.ir.layers import linear_layer, weight_source

__all__ = ["Knob", "Space", "plan"]

#: the settings tried per family, "off" first
TOME_KEEP = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
PRUNE_RATIO = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
LOWRANK_PARAMS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6)
HEAD_RATIO = (0.0, 0.1, 0.17, 0.25, 0.33, 0.5)
QUANTIZE = ("float", "int8")
#: what the float pipelines end with: the same cleanup and fusions the int8 preset runs, so
#: that a candidate's speed-up is its families', not a missing fusion's
FLOAT_TAIL = "cleanup,fuse-for-ort"
#: head pruning reads the fused Attention; without an attention bias input, which the int8
#: preset's QAttention has no room for
FUSE = "fuse-for-ort(attention_bias=false)"
#: the order the structural families run in: token merging reads the exported attention and
#: MLP pruning the unfused MatMuls, head pruning the fused Attention, and lowrank factors
#: what is left (so never the packed Q/K/V weight the fusion builds)
ORDER = ("tome", "prune", "heads", "lowrank")


@dataclasses.dataclass(frozen=True)
class Knob:
    family: str  # tome | prune | heads | lowrank | quantize
    values: tuple  # the settings tried, off first
    offer: str  # what the graph offers this family

    def spec(self, value: object, calibrated: bool = False) -> str | None:
        """The pass for one setting, None when off; ``calibrated``: data to rank by."""
        if value == self.values[0]:
            return None
        importance = ",importance=activation" if calibrated else ""
        if self.family == "tome":
            return f"tome(keep={value})"
        if self.family == "prune":
            structure = "mlp" if "MLP" in self.offer else "channel"
            return f"prune(structure={structure},ratio={value}{importance})"
        if self.family == "heads":
            return f"{FUSE},prune(structure=head,ratio={value}{importance})"
        if self.family == "lowrank":
            return f"lowrank(params={value})"
        return str(value)  # quantize: the preset's name


@dataclasses.dataclass(frozen=True)
class Space:
    knobs: tuple[Knob, ...]
    notes: tuple[str, ...]  # the families not offered, and why
    calibrated: bool = False  # pruning ranks by activation

    def pipeline(self, settings: Mapping[str, object]) -> str:
        """The pipeline string for ``settings`` (family -> value; a missing family is off):
        ``cleanup`` (the shapes the structural passes read), the structural passes in
        :data:`ORDER`, then int8 or the float tail."""
        structural = sorted((k for k in self.knobs if k.family != "quantize"),
                            key=lambda k: ORDER.index(k.family))
        parts = [spec for knob in structural if (spec := knob.spec(
            settings.get(knob.family, knob.values[0]), self.calibrated))]
        quantize = next((k for k in self.knobs if k.family == "quantize"), None)
        tail = quantize.spec(settings.get("quantize", quantize.values[0])) if quantize else None
        return ",".join((["cleanup"] if parts else []) + parts + [tail or FLOAT_TAIL])

    def families(self) -> Sequence[str]:
        return [k.family for k in self.knobs]


def plan(model: ModelSource, calibrated: bool = False) -> Space:
    """The knobs ``model``'s main graph offers, read after ``cleanup`` (which infers the
    shapes the attention and channel analyses need, as every candidate pipeline runs it);
    ``calibrated``: the candidates get calibration data."""
    graph = compile(model, "cleanup", progress=False).graph
    knobs, notes = [], []
    blocks, _ = transformer_blocks(graph, core=True)  # what tome itself accepts
    if blocks:
        knobs.append(Knob("tome", TOME_KEEP, f"{len(blocks)} transformer blocks"))
    else:
        notes.append("tome: no transformer block (attention with a traced token stream)")
    groups = [g for g in channel_groups(graph) if not g.blocked]
    if any(g.kind == "linear" for g in groups):  # an MLP's width, with tome's blocks or not
        knobs.append(Knob("prune", PRUNE_RATIO, f"{sum(g.kind == 'linear' for g in groups)} "
                          "MLP channel groups"))
    elif any(g.kind == "conv" for g in groups):
        knobs.append(Knob("prune", PRUNE_RATIO,
                          f"{sum(g.kind == 'conv' for g in groups)} Conv channel groups"))
    else:
        notes.append("prune: no channel group a pruning can shrink")
    weights = sum(1 for node in graph if linear_layer(node) is not None
                  and node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1
                  and _matrix(node.inputs[1]))
    if weights:
        knobs.append(Knob("lowrank", LOWRANK_PARAMS, f"{weights} MatMul/Gemm weights"))
    else:
        notes.append("lowrank: no MatMul/Gemm with a constant 2-D weight")
    fused, _ = fused_blocks(compile(model, f"cleanup,{FUSE}", progress=False).graph)
    if any(block.heads > 1 for block in fused):
        knobs.append(Knob("heads", HEAD_RATIO, f"{sum(b.heads for b in fused)} attention "
                          f"heads in {len(fused)} fused blocks"))
    else:
        notes.append("heads: no attention that fuse-for-ort fuses with an output projection")
    if knobs or any(linear_layer(node) is not None for node in graph):
        knobs.append(Knob("quantize", QUANTIZE, "layers with constant weights"))
    else:
        notes.append("quantize: no layer with a constant weight")
    return Space(tuple(knobs), tuple(notes), calibrated)


def _matrix(value: ir.Value | None) -> bool:
    """A constant 2-D weight, directly or through a Transpose (reads no bytes)."""
    source = weight_source(value)
    return source is not None and len(source.tensor.shape) == 2
