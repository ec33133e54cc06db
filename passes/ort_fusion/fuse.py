"""``fuse-for-ort``: rewrite what exporters write into the fused ops ONNX Runtime runs fast,
where ORT's own graph optimiser misses them (float32, CPU provider).

- Erf-GELU chains          -> ``Gelu``; ``Gelu(Add(a, bias))`` -> ``BiasGelu``   (``gelu``)
- written-out attention    -> ``com.microsoft.Attention``                       (``attention``)
- residual Add + LayerNorm -> ``com.microsoft.SkipLayerNormalization``   (``skip_layer_norm``)
- otherwise, residual Add + LayerNorm -> ``Sum`` + LayerNorm, bit-identical   (``add_as_sum``)
- LLaMA attention (GQA heads, rotary, KV cache, the exported mask)
                           -> ``com.microsoft.GroupQueryAttention``  (``group_query_attention``;
                              graphs with a past cache only with ``group_query_attention_past``)
- residual Add + RMSNorm   -> ``com.microsoft.SkipSimplifiedLayerNormalization``  (``rms_norm``)

Each module (``gelu``, ``attention``, ``skip_layer_norm``) lists its rewrites and their
exactness; all agree with the original within float rounding (ORT outputs within ~1e-6 of
the output scale on DeiT-S and MiniLM). ``skip_layer_norm`` is off by default because ORT
1.31's CPU kernel for it is slower than the Add and LayerNormalization it replaces; ORT
would still fuse it on its own when the Add has no other reader (post-norm BERTs: all 12 in
MiniLM, 9 ms of 42 in its int8 model), so ``add_as_sum`` writes that Add as a Sum. What
the rewrites leave unused (old weights, the unbinding and mask subgraphs) is removed; nodes
that were dead before stay. Why a GELU-like chain, Softmax or LayerNormalization was not
fused is in the notes.

Measured with ``benchmarks/fuse_for_ort.py`` (ORT 1.31, 2 threads, a 2-core Xeon VM):
DeiT-S/16 1.05x at batch 1 and 1.18x at batch 8, MiniLM at 128 tokens 1.07x at both; most
of it from Attention (GELU alone: 2-5%).

LLM decoders (``gqa.py``, ``rms_norm.py``; measured with ORT 1.32, 2 threads, the same 2-core
VM shared with other jobs (load 5-6), interleaved medians, on SmolLM2-135M exported with and
without cache, ``cleanup`` first; wall time, and process CPU time with thread spinning off,
which the other jobs disturb less):

| SmolLM2-135M                      | prefill 128, batch 1 | decode 1 token, past 128 |
| --------------------------------- | -------------------- | ------------------------ |
| exported fp32                     | 907 ms (372 CPU)     | 119 ms (50 CPU)          |
| ``cleanup``                       | 0.97x (1.04x)        | 1.00x (1.01x)            |
| + ``rms_norm``                    | 1.02x (1.06x)        | 1.03x (1.03x)            |
| + ``group_query_attention``       | 1.09x (1.14x)        | 1.10x (1.13x) [past]     |
| + both                            | 1.10x (1.11x)        | 1.15x (1.13x) [past]     |

([past]: with ``group_query_attention_past=True``.) GroupQueryAttention is the gain (its
kernel replaces the repeat of the KV heads, the transposes, the -inf softmax and the NaN
guard). ``rms_norm`` is off by default: against ``cleanup`` alone it came out between 0.99x
and 1.05x over five runs, not measurably faster. The issue's 1.3x at prefill is not
reached: ~75% of the prefill time is the MatMuls, which no fusion here changes. Bound (ORT
profile, 12 runs of prefill 128, 2 threads): of 319 ms of kernel time in the export, the
MatMuls take 228 ms (attention's P V among them); in the fused graph the weight MatMuls
alone take 236 ms (profiles differ by a few %), GroupQueryAttention 27 ms and the other ops
~31 ms: removing every one of those would give 319 / (228..236 + 27) = 1.22x-1.25x at most.
Packing Q/K/V into one MatMul (GroupQueryAttention's packed input) and gate/up into one
MatMul + Split measured 0.97x against the unpacked fused graph (MLAS runs the wider GEMMs
no faster), so it is not written. Logits of
the fused model (both fusions) agree with the export's within ~2e-4 (maxabs) at prefill.

GroupQueryAttention is exact for every input of a graph without past (the mask goes in as
``attention_bias``, ``causal=0``, the lengths come from the shapes, the rotary tables are the
graph's own); on a graph with a past cache ORT refuses batch > 1 with more than one new
token after a non-empty past, hence the opt-in ``group_query_attention_past`` (exact
wherever it runs; ``gqa.py`` says more). Rotary embedding is absorbed by it
(``do_rotary``); a standalone ``RotaryEmbedding`` fusion is not written: where GQA is not
fused, the rotary ops were ~2% of the prefill kernel time.

Attention and SkipLayerNormalization need shapes to prove that axes line up; TorchScript
exports carry none for intermediate values, so ``infer_shapes`` (on by default) first runs
ONNX shape inference with data propagation, as ``fuse-shape-ops`` does (it adds shape
annotations, never changes what the graph computes; without data propagation where that
would spell out a huge value, and a note says so).
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir

from onnxpress.ir.analysis import all_graphs, count_nodes, opset_version
from onnxpress.ir.edit import MS_DOMAIN, TensorShapeInference, remove_unread
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.ort_fusion._common import Declines
from onnxpress.passes.ort_fusion.attention import fuse_attention
from onnxpress.passes.ort_fusion.gelu import bias_gelu_rules, gelu_rules
from onnxpress.passes.ort_fusion.gqa import fuse_group_query_attention
from onnxpress.passes.ort_fusion.rms_norm import drop_unused_outputs, skip_rms_norm_rules
from onnxpress.passes.ort_fusion.skip_layer_norm import (
    add_as_sum,
    drop_statistics_outputs,
    skip_layer_norm_rules,
)

__all__ = ["FuseForOrt"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FuseForOrt(Pass):
    name = "fuse-for-ort"
    visits_subgraphs = True

    gelu: bool = True
    attention: bool = True
    skip_layer_norm: bool = False
    add_as_sum: bool = True  # without skip_layer_norm: keep ORT from fusing it (slow kernel)
    mask_value: float | None = -50.0  # additive mask of fused attention (attention.py)
    attention_bias: bool = True  # fuse attention with a shared additive bias (tome's)
    rms_norm: bool = False  # residual Add + RMSNorm -> SkipSimplifiedLayerNormalization
    group_query_attention: bool = True
    group_query_attention_past: bool = False  # ORT rejects batch > 1 x chunks with a past
    infer_shapes: bool = True

    def call(self, model: ir.Model) -> PassStats:
        nodes_before = count_nodes(model)
        notes: list[str] = []
        if self.infer_shapes and (self.attention or self.skip_layer_norm or self.rms_norm
                                  or self.group_query_attention):
            notes = TensorShapeInference(self.name)(model).notes
        live = _live(model)
        opset = opset_version(model) or 1
        kinds = ("GELU", "BiasGelu", "Softmax", "LayerNormalization", "GroupQueryAttention",
                 "RMSNorm")
        declines = {kind: Declines() for kind in kinds}
        stats = {"attention": 0, "gelu": 0, "bias_gelu": 0, "skip_layer_norm": 0, "add_as_sum": 0,
                 "group_query_attention": 0, "rms_norm": 0}
        if self.group_query_attention:
            for graph in list(all_graphs(model)):
                stats["group_query_attention"] += fuse_group_query_attention(
                    graph, declines["GroupQueryAttention"],
                    with_past=self.group_query_attention_past)
        if self.attention:
            softmax_axis = -1 if opset >= 13 else 1
            for graph in list(all_graphs(model)):
                stats["attention"] += fuse_attention(graph, declines["Softmax"], softmax_axis,
                                                     self.mask_value, self.attention_bias)
        if self.gelu:
            onnx_gelu = opset >= 20
            stats["gelu"] = gelu_rules(
                onnx_gelu=onnx_gelu, declines=declines["GELU"]
            ).apply_to_model(model)
            stats["bias_gelu"] = bias_gelu_rules(
                onnx_gelu=onnx_gelu, declines=declines["BiasGelu"]
            ).apply_to_model(model)
        if self.skip_layer_norm:
            stats["skip_layer_norm"] = skip_layer_norm_rules(
                declines=declines["LayerNormalization"]
            ).apply_to_model(model)
            drop_statistics_outputs(model)
        elif self.add_as_sum:
            stats["add_as_sum"] = add_as_sum(model)
        if self.rms_norm:
            stats["rms_norm"] = skip_rms_norm_rules(
                declines=declines["RMSNorm"]).apply_to_model(model)
            drop_unused_outputs(model)
        fused = sum(stats.values())
        if fused:
            _import_ms_domain(model)
            _remove_newly_dead(model, live)
        stats["nodes_removed"] = nodes_before - count_nodes(model)
        notes += [note for what, d in declines.items() for note in d.notes(what)]
        logger.info("fuse-for-ort: %s", stats)
        return PassStats(model, modified=fused > 0, stats=stats, notes=notes)


def _import_ms_domain(model: ir.Model) -> None:
    if any(node.domain == MS_DOMAIN for node in model.graph.all_nodes()):
        model.opset_imports.setdefault(MS_DOMAIN, 1)


def _live(model: ir.Model) -> tuple[set[ir.Node], set[ir.Value]]:
    """Nodes whose outputs are used, and initializers that are read, before the rewrites."""
    nodes = {node for node in model.graph.all_nodes() if _used(node)}
    initializers = {
        value for graph in all_graphs(model) for value in graph.initializers.values()
        if value.uses()
    }
    return nodes, initializers


def _used(node: ir.Node) -> bool:
    return any(out.uses() or out.is_graph_output() for out in node.outputs)


def _remove_newly_dead(model: ir.Model, live: tuple[set[ir.Node], set[ir.Value]]) -> None:
    """Remove what the rewrites left unused: nodes and initializers that had readers before
    and have none now. What was dead before the pass is the user's and stays (the sweep
    only walks up from what was live)."""
    nodes, initializers = live
    remove_unread([*initializers, *(out for node in nodes for out in node.outputs)],
                  producers=None)
