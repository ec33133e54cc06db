"""``weight-only``: int4 / int8 blocked quantization of MatMul and Gemm weights, for size.

Activations stay float; each constant weight ``W [K, N]`` is stored as ``bits``-bit levels
with one scale (and, asymmetric, one zero point) per block of ``block_size`` consecutive
input features of an output channel (``block_size=0``: one per output channel); the math is
in :mod:`.blockwise`. Two output formats:

- ``format=dq`` (standard ONNX, any runtime):
  ``MatMul(A, W)  ->  MatMul(A, DequantizeLinear(W_q, scale[, zero_point]; axis, block_size))``
  with ``W_q`` INT4/INT8 (symmetric, no zero point) or UINT4/UINT8 (asymmetric); Gemm keeps
  its weight layout and reads the DequantizeLinear in the layout it expects. Blocked
  DequantizeLinear and 4-bit types need opset 21: a lower default opset import is raised
  (onnxscript's version converter; the report says so), and where it cannot be, nothing is
  quantized and the report says why. int8 per channel needs only opset 13.
- ``format=matmulnbits`` (ONNX Runtime's contrib op):
  ``MatMul(A, W)  ->  com.microsoft.MatMulNBits(A, B, scales[, zero_points]; K, N, bits,
  block_size, accuracy_level)``, ``Gemm(A, W, C)`` too when ``transA=0, alpha=1`` and ``C``
  is a constant row (``beta * C`` becomes the bias input). ``block_size`` must be a power of
  two >= 16; per channel uses one block of the next power of two >= K.

A weight read through ``Transpose(perm=[1, 0])`` of a constant (what PyTorch exports for
``nn.Linear``) counts as a constant: the Transpose goes away with the float weight. A K that
is not a multiple of ``block_size`` leaves a shorter last block (DequantizeLinear) or is
padded with zero-valued levels (MatMulNBits); no weight is skipped for it.

How the levels and block parameters are chosen (``method``):

- ``rtn``: round to nearest on each block's min-max range (no data).
- ``clip``: each block's range shrunk by the best of 20 factors, then its scale and zero
  point refitted to its levels (:mod:`.search`); the error each input feature makes is
  weighted by the mean square of its activations where calibration data is given (one pass
  over the data collects ``X^T X`` of every quantized layer's input), evenly without.
- ``awq``: ``clip`` after an activation-aware scaling of the input features (AWQ): for each
  group of weights reading one activation, ``s = rms(x)**alpha`` with alpha searched by the
  output error; the weight columns are multiplied by ``s``, the activation divided by it
  (folded into the gain of the RMSNorm/LayerNorm before, else one ``Mul``). Needs data.
- ``gptq`` (Frantar et al.): each weight quantized column by column, spreading the rounding
  error over the columns not yet quantized. Needs data. Its inputs come from the float
  model (all layers at once, not layer by layer as in the paper).
- ``awq-gptq``: ``awq``'s scaling, then GPTQ on the scaled weights. Needs data.
- ``auto`` (the default): ``awq-gptq`` with calibration data, ``clip`` without.

A weight that is also an embedding table (a tied LM head: ``Gather(table)`` plus
``MatMul(x, Transpose(table))``) is stored once in ``format=matmulnbits``: the Gather reads
its rows from the packed weight (:mod:`.lookup`), bit-exact to what MatMulNBits computes.
In ``format=dq`` the table stays float for the Gather beside its quantized copy.

Lossy by design. Exactness promised: the float weight the runtime computes from what is
stored is ``Blocked.dequantize()`` bit for bit (DequantizeLinear semantics). Note that ONNX
Runtime fuses ``DequantizeLinear(int4) -> MatMul`` into MatMulNBits with
``accuracy_level=4`` (int8 activations) by default, which adds ~0.5% relative error; set
the session option ``session.qdq_matmulnbits_accuracy_level=0`` to keep float activations.

Left unchanged, and listed in the notes: weights that are not constants, not float32, not
2-D, excluded, or smaller than ``min_elements``; Gemm forms MatMulNBits cannot express.
Only the main graph is rewritten; subgraphs are left whole.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from onnxpress.backends.opset_upgrade import upgrade
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array, opset_version
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import MS_DOMAIN, remove_unread
from onnxpress.ir.layers import linear_layer, table_lookups, weight_source
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.quantize.weight_only import blockwise, search
from onnxpress.passes.quantize.weight_only.activations import (
    divide_input,
    input_moments,
    inputs_of,
)
from onnxpress.passes.quantize.weight_only.lookup import packed_rows

__all__ = ["WeightOnly"]


_OPS = ("MatMul", "Gemm")
_BLOCKED_OPSET = 21  # DequantizeLinear's block_size attribute and INT4/UINT4


@dataclasses.dataclass(frozen=True)
class WeightOnly(Pass):
    name = "weight-only"

    bits: int = 4  # 4 or 8
    block_size: int = 32  # along K; 0 = one scale per output channel
    # None: asymmetric for MatMulNBits (uint4 zero points, better perplexity, as fast in ORT),
    # symmetric for DequantizeLinear (TensorRT's int4 weights take no zero point)
    symmetric: bool | None = None
    format: Literal["dq", "matmulnbits"] = "dq"
    method: Literal["auto", "rtn", "clip", "awq", "gptq", "awq-gptq"] = "auto"
    min_elements: int = 4096  # smaller weights stay float
    exclude: tuple[str, ...] = ()  # node names kept float
    ops: tuple[Literal["MatMul", "Gemm"], ...] = ("MatMul", "Gemm")
    # MatMulNBits: 0 keeps A float, 4 lets ORT quantize A to int8 per block; -1: 4 for
    # 8-bit weights (ORT 1.32 has no fast float path for them), 0 for 4-bit
    accuracy_level: int = -1
    head_bits: int = 8  # the output layer and a tied embedding table; 0: ``bits``
    max_batches: int = 64  # gptq: calibration batches read
    damp: float = 0.01  # gptq: added to H's diagonal, times its mean
    data: Any = data_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "weight-only"
        if self.bits not in (4, 8) or self.head_bits not in (0, 4, 8):
            raise BadInputError(f"{where}: bits must be 4 or 8 (head_bits 0, 4 or 8), not "
                                f"{self.bits} ({self.head_bits})")
        if self.block_size < 0:
            raise BadInputError(f"{where}: block_size must be >= 0 (0 = per output channel)")
        if self.format == "matmulnbits" and self.block_size and not _nbits_block(self.block_size):
            raise BadInputError(f"{where}: MatMulNBits needs a block_size that is a power of "
                                "two >= 16 (or 0 for per channel)")
        if not -1 <= self.accuracy_level <= 4:
            raise BadInputError(f"{where}: accuracy_level must be 0 to 4 (or -1: by bits)")
        if self.damp < 0 or self.max_batches < 1:
            raise BadInputError(f"{where}: damp must be >= 0 and max_batches >= 1")

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False, stats={
            "nodes": 0, "weights": 0, "float_bytes": 0, "quantized_bytes": 0})
        if self.method in ("gptq", "awq", "awq-gptq") and self.data is None:
            raise BadInputError(f"weight-only(method={self.method}) needs calibration data: "
                                "give --calibration FILE.npz (arrays named after the model's "
                                "inputs), or use method=clip or rtn")
        targets, skipped = self._plan(model.graph)
        opset = opset_version(model)
        if targets and self.format == "dq" and not self._opset_ready(model, result.notes):
            return result
        if opset_version(model) != opset:
            targets, skipped = self._plan(model.graph)  # the converter may replace nodes
        lookups = _lookups(model.graph, targets) if self.format == "matmulnbits" else {}
        heads = {t.source for t in targets if t.source in lookups or any(
            out.is_graph_output() for out in t.node.outputs)} if self.head_bits else set()
        plans = self._plans(model, targets, lookups | dict.fromkeys(heads, []), result.notes)
        self._rewrite(model.graph, targets, plans, result.stats, lookups, heads)
        if heads and self.head_bits != self.bits:
            result.notes.append(f"{self.head_bits}-bit (the output layer or a tied embedding "
                                f"table): {_listing(sorted(h.name or '' for h in heads))}")
        if result.stats["nodes"] and self.format == "matmulnbits":
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        result.notes.extend(_skip_notes(skipped))
        result.notes.extend(self._shape_notes(targets))
        result.modified = bool(result.stats["nodes"])
        return result

    # ------------------------------------------------------------------------- planning

    def _plan(self, graph: ir.Graph) -> tuple[list[_Target], dict[str, list[str]]]:
        ops, exclude = set(self.ops), set(self.exclude)
        targets: list[_Target] = []
        skipped: dict[str, list[str]] = collections.defaultdict(list)
        for node in graph:
            if node.domain not in ("", "ai.onnx") or node.op_type not in ops:
                continue
            reason = "excluded" if node.name in exclude else None
            target = None if reason else _target(node)
            if target is None:
                reason = reason or "B is not a constant (nor a transposed one)"
            else:
                reason = self._unsupported(target)
            if reason:
                skipped[reason].append(node.name or node.op_type)
            else:
                targets.append(target)
        return targets, skipped

    def _unsupported(self, target: _Target) -> str | None:
        tensor, node = target.tensor, target.node
        if tensor.dtype != ir.DataType.FLOAT:
            return f"weight is {tensor.dtype}, not float32"
        if len(tensor.shape) != 2:
            return "weight is not 2-D"
        if target.k * target.n < self.min_elements:
            return f"weight has fewer than min_elements={self.min_elements} elements"
        if self.format != "matmulnbits":
            return None
        a = node.inputs[0]
        if a is not None and a.shape is not None and len(a.shape) < 2:
            return "MatMulNBits needs A of rank >= 2"
        if node.op_type == "Gemm":
            return _gemm_obstacle(node, target.n)
        return None

    def _opset_ready(self, model: ir.Model, notes: list[str]) -> bool:
        """Raise the default opset import to what the DequantizeLinear needs; False (and a
        note) when it cannot be raised."""
        needed = _BLOCKED_OPSET if self.bits == 4 or self.block_size else 13
        current = opset_version(model) or 0
        if current >= needed:
            return True
        try:
            # checked on random inputs: the data, where there is any, is GPTQ's, and may be
            # a one-shot stream
            note = upgrade(model, needed)
        except BadInputError as error:
            notes.append(f"nothing quantized: format=dq needs opset {needed} (blocked or 4-bit "
                         f"DequantizeLinear) and the model's opset {current} could not be "
                         f"raised ({error}); use format=matmulnbits")
            return False
        if needed >= _BLOCKED_OPSET:
            model.ir_version = max(model.ir_version or 0, 10)  # what opset 21 and int4 need
        notes.append(f"{note}, for DequantizeLinear")
        return True

    def _shape_notes(self, targets: list[_Target]) -> list[str]:
        if not self.block_size:
            return []
        ragged = sorted({t.source.name or "" for t in targets if t.k % self.block_size})
        if not ragged:
            return []
        how = ("padded with zero levels" if self.format == "matmulnbits"
               else "quantized as a shorter last block")
        return [f"K not a multiple of block_size={self.block_size} ({how}): "
                f"{_listing(ragged)}"]

    # ------------------------------------------------------------------------- rewriting

    @property
    def _how(self) -> str:
        """The method this run applies: ``auto`` is ``awq-gptq`` with data, else ``clip``."""
        if self.method != "auto":
            return self.method
        return "awq-gptq" if self.data is not None else "clip"

    def _plans(self, model: ir.Model, targets: list[_Target],
               lookups: dict[ir.Value, list[ir.Node]], notes: list[str]
               ) -> dict[ir.Value, _Plan]:
        """What each weight's quantization uses from the calibration data: the second
        moments of its input (GPTQ's factor, the clip search's weights) and, ``awq``, the
        input scaling searched for each group of weights that read the same activation."""
        how = self._how
        if self.data is None or how == "rtn" or not targets:
            return {}
        inputs = inputs_of(targets)
        for source, names in inputs.items():
            if "" in names:
                notes.append(f"{how}: {source.name} without calibration statistics (an input "
                             "is transposed or unnamed)")
        moments = input_moments(model, inputs, self.data, max_batches=self.max_batches)
        plans = {source: _Plan(hessian) for source, (_, hessian) in moments.items()}
        if how in ("awq", "awq-gptq"):
            self._search_scales(model.graph, targets, plans, lookups, notes)
        if how in ("gptq", "awq-gptq"):  # on the scaled weights: H / (s s^T)
            shared: dict[tuple, blockwise.GptqFactor] = {}
            for source, (key, hessian) in moments.items():
                scale = plans[source].scale
                tag = (key, None if scale is None else scale.tobytes())
                if tag not in shared:
                    scaled = hessian if scale is None else hessian / np.outer(scale, scale)
                    shared[tag] = blockwise.gptq_factor(scaled, block_size=self.block_size,
                                                        damp=self.damp)
                plans[source] = dataclasses.replace(plans[source], factor=shared[tag])
        return plans

    def _search_scales(self, graph: ir.Graph, targets: list[_Target],
                       plans: dict[ir.Value, _Plan], lookups: dict[ir.Value, list[ir.Node]],
                       notes: list[str]) -> None:
        """AWQ's input scaling, per group of weights that read the same activation (and
        nothing else): searched, applied to the plans, and the activation divided."""
        groups: dict[ir.Value, list[_Target]] = collections.defaultdict(list)
        for target in targets:
            groups[target.node.inputs[0]].append(target)
        readers: dict[ir.Value, set[int]] = collections.defaultdict(set)
        for target in targets:
            readers[target.source].add(id(target.node.inputs[0]))
        how: collections.Counter = collections.Counter()
        for value, members in groups.items():
            sources = list(dict.fromkeys(t.source for t in members))
            if any(s not in plans or len(readers[s]) > 1 or s in lookups for s in sources):
                continue  # a tied table, or a weight also read with another input
            weights = [self._weight_nk(next(t for t in members if t.source is s))
                       for s in sources]
            scale, _ = search.activation_scales(
                weights, plans[sources[0]].hessian,
                lambda w: blockwise.round_to_nearest(w, **self._grid()).dequantize())
            if np.all(scale == 1):
                continue
            for source in sources:
                plans[source] = dataclasses.replace(plans[source], scale=scale)
            how[divide_input(graph, value, scale, [t.node for t in members])] += 1
        if how:
            notes.append("awq: activations scaled for " + ", ".join(
                f"{count} groups ({way})" for way, count in sorted(how.items())))

    def _chooser(self, plan: _Plan, bits: int) -> blockwise.Chooser | None:
        """GPTQ's block parameters by the clip search and refit, on the block as GPTQ has
        updated it, its features weighted by the (scaled) input moments."""
        if not self.block_size:
            return None
        importance = np.diag(plan.hessian)
        if plan.scale is not None:
            importance = importance / np.square(plan.scale)
        grid = dict(self._grid(bits), block_size=self.block_size)

        def choose(block: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
            weights = np.zeros(self.block_size, np.float32)
            part = importance[first:first + self.block_size]
            weights[:len(part)] = part
            block = np.asarray(block, np.float32)
            found = search.refine(block, search.clip_search(block, importance=weights, **grid),
                                  signed_scale=grid["signed_scale"], importance=weights)
            return found.scale[:, 0], found.zero_point[:, 0]

        return choose

    @property
    def _symmetric(self) -> bool:
        return self.format == "dq" if self.symmetric is None else self.symmetric

    def _accuracy_level(self, bits: int) -> int:
        """What MatMulNBits is told: 8-bit weights with float activations take a slow path
        in ONNX Runtime 1.32 (0.2x fp32 at one row, against 6.5x with int8 activations), so
        ``-1`` gives them 4; 4-bit weights keep float activations (4 is faster at one row,
        2.5x, but slower at 128 rows, 0.65-0.85x: pass it for token-by-token decoding)."""
        if self.accuracy_level >= 0:
            return self.accuracy_level
        return 4 if bits == 8 else 0

    def _grid(self, bits: int | None = None) -> dict[str, Any]:
        # MatMulNBits takes negative scales, so the largest magnitude can take level -8
        return dict(bits=bits or self.bits, block_size=self.block_size,
                    symmetric=self._symmetric, signed_scale=self.format == "matmulnbits")

    def _weight_nk(self, target: _Target) -> np.ndarray:
        w = constant_array(target.source)
        assert w is not None
        return np.asarray(w if target.source_nk else w.T, np.float32)

    def _quantize(self, target: _Target, plan: _Plan | None, stats: dict[str, Any],
                  bits: int) -> blockwise.Blocked:
        w_nk = self._weight_nk(target)
        stats["weights"] += 1
        stats["float_bytes"] += w_nk.nbytes
        if plan is not None and plan.scale is not None:
            w_nk = w_nk * plan.scale
        if plan is not None and plan.factor is not None:
            return blockwise.gptq(w_nk, plan.factor, **self._grid(bits),
                                  choose=self._chooser(plan, bits))
        if self._how == "rtn":
            return blockwise.round_to_nearest(w_nk, **self._grid(bits))
        importance = None
        if plan is not None:
            importance = np.diag(plan.hessian)
            if plan.scale is not None:
                importance = importance / np.square(plan.scale)
        grid = self._grid(bits)
        clipped = search.clip_search(w_nk, importance=importance, **grid)
        return search.refine(w_nk, clipped, signed_scale=grid["signed_scale"],
                             importance=importance)

    def _rewrite(self, graph: ir.Graph, targets: list[_Target],
                 plans: dict[ir.Value, _Plan], stats: dict[str, Any],
                 lookups: dict[ir.Value, list[ir.Node]], heads: set[ir.Value]) -> None:
        done: dict[ir.Value, blockwise.Blocked] = {}
        emitted: dict[tuple, Any] = {}
        existing = set(graph.initializers.values())
        for target in targets:
            if target.source not in done:
                bits = self.head_bits if target.source in heads else self.bits
                done[target.source] = self._quantize(target, plans.get(target.source), stats,
                                                     bits)
            if self.format == "dq":
                self._emit_dq(graph, target, done[target.source], emitted)
            else:
                self._emit_nbits(graph, target, done[target.source], emitted,
                                 lookups.pop(target.source, []))
            stats["nodes"] += 1
        for target in targets:
            via = target.via.outputs[0] if target.via is not None else None
            remove_unread([via, target.source], producers=("Transpose", "Constant"))
        stats["quantized_bytes"] = sum(v.const_value.nbytes for v in graph.initializers.values()
                                       if v not in existing and v.const_value is not None)

    def _emit_dq(self, graph: ir.Graph, target: _Target, blocked: blockwise.Blocked,
                 emitted: dict[tuple, Any]) -> None:
        """``DequantizeLinear`` of the levels in the layout the node reads B in."""
        wants_nk = _reads_nk(target.node)
        key = ("dq", target.source, wants_nk)
        if key not in emitted:
            emitted[key] = _dequantize_linear(graph, target, blocked, wants_nk,
                                              per_channel=not self.block_size)
        target.node.replace_input_with(1, emitted[key])

    def _emit_nbits(self, graph: ir.Graph, target: _Target, blocked: blockwise.Blocked,
                    emitted: dict[tuple, Any], gathers: list[ir.Node]) -> None:
        """``MatMulNBits`` in place of the node; ``gathers`` (embedding lookups of the same
        table) then read their rows from its packed weight."""
        node, name = target.node, target.source.name
        size = self.block_size or _next_power_of_two(max(target.k, 16))
        key = ("nbits", target.source)
        if key not in emitted:
            b, scales, zero = blockwise.pack_matmul_nbits(blocked, size)
            builder = Builder(graph)
            emitted[key] = (builder.initializer(b, f"{name}_q{blocked.bits}"),
                            builder.initializer(scales, f"{name}_scales"),
                            None if zero is None else
                            builder.initializer(zero, f"{name}_zero_points"))
        b_value, scale_value, zero_value = emitted[key]
        for gather in gathers:
            rows = Builder(graph)
            out = packed_rows(rows, gather.inputs[1], b=b_value, scales=scale_value,
                              zero_points=zero_value, n=target.n, k=target.k, bits=blocked.bits,
                              block_size=size, rank=len(gather.inputs[1].shape))
            ir.convenience.replace_nodes_and_values(
                graph, gather, [gather], list(rows.nodes), [gather.outputs[0]], [out])
        builder = Builder(graph)
        c = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        bias = _gemm_bias(graph, node, c, target.n)
        inputs = _trim([node.inputs[0], b_value, scale_value, zero_value, None, bias])
        out = builder.op("MatMulNBits", inputs, {
            "K": target.k, "N": target.n, "bits": blocked.bits, "block_size": size,
            "accuracy_level": self._accuracy_level(blocked.bits)}, domain=MS_DOMAIN,
            name=f"{node.name}_MatMulNBits" if node.name else None)
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], list(builder.nodes), [node.outputs[0]], [out])
        remove_unread([c], producers=None)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the calibration data says about one weight: ``hessian`` (its input's ``X^T X /
    n``), GPTQ's ``factor`` of it, AWQ's input ``scale``."""

    hessian: np.ndarray
    factor: blockwise.GptqFactor | None = None
    scale: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _Target:
    """A MatMul/Gemm whose B comes from the constant ``source`` (an initializer or a Constant
    node's output, holding ``tensor``), stored ``[N, K]`` (``source_nk``) or ``[K, N]``;
    ``via``: the Transpose between them, if any."""

    node: ir.Node
    source: ir.Value
    tensor: ir.TensorProtocol
    source_nk: bool
    via: ir.Node | None

    @property
    def k(self) -> int:
        return int(self.tensor.shape[1 if self.source_nk else 0])

    @property
    def n(self) -> int:
        return int(self.tensor.shape[0 if self.source_nk else 1])


def _target(node: ir.Node) -> _Target | None:
    """The constant behind B (directly, or through a Transpose(perm=[1, 0])), or None."""
    layer, source = linear_layer(node), weight_source(node.inputs[1] if len(node.inputs) > 1
                                                      else None)
    if layer is None or source is None or source.via is not None and source.perm != (1, 0):
        return None
    reads_nk = _reads_nk(node)
    return _Target(node, source.value, source.tensor,
                   reads_nk if source.via is None else not reads_nk, source.via)


def _lookups(graph: ir.Graph, targets: list[_Target]) -> dict[ir.Value, list[ir.Node]]:
    """The embedding Gathers of each target's table, where the target reads that table as
    ``[N, K]`` (a tied LM head): one copy serves both."""
    found = {t.source: table_lookups(t.source, graph) for t in targets if t.source_nk}
    return {table: gathers for table, gathers in found.items() if gathers}


def _reads_nk(node: ir.Node) -> bool:
    """Whether the node reads its 2-D B as ``[N, K]`` (a Gemm reading it transposed)."""
    layer = linear_layer(node)
    return layer is not None and layer.out_axis == 0


def _gemm_obstacle(node: ir.Node, n: int) -> str | None:
    """Why MatMulNBits cannot express this Gemm, or None."""
    if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0:
        return "Gemm with transA=1 or alpha != 1 (MatMulNBits cannot; use format=dq)"
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if c is None:
        return None
    array = constant_array(c)
    if array is None or array.size not in (1, n) or array.ndim > 2 or (
            array.ndim == 2 and array.shape[0] != 1):
        return "Gemm whose C is not a constant row (MatMulNBits cannot; use format=dq)"
    return None


def _gemm_bias(graph: ir.Graph, node: ir.Node, c: ir.Value | None, n: int) -> ir.Value | None:
    """Gemm's ``beta * C`` as MatMulNBits' bias ``[N]`` (C itself when it already is one)."""
    array = constant_array(c)
    if c is None or array is None:
        return None
    beta = np.float32(_attr(node, "beta", 1.0))
    if beta == 1 and array.shape == (n,) and array.dtype == np.float32:
        return c
    bias = np.broadcast_to(array.astype(np.float32).reshape(-1), (n,)) * beta
    return Builder(graph).initializer(bias.astype(np.float32), f"{c.name}_bias")


def _dequantize_linear(graph: ir.Graph, target: _Target, blocked: blockwise.Blocked,
                       wants_nk: bool, *, per_channel: bool) -> ir.Value:
    """Levels, scale (and zero point) initializers + DequantizeLinear before the node."""
    name = target.source.name
    q, scale, zero = blocked.q, blocked.scale, blocked.zero_point
    if per_channel:
        scale, zero = scale[:, 0], zero[:, 0]
    if not wants_nk:
        q, scale, zero = q.T, scale.T, zero.T
    storage = _storage_dtype(blocked)
    builder = Builder(graph)
    inputs = [builder.initializer(q.astype(storage), f"{name}_q{blocked.bits}"),
              builder.initializer(np.ascontiguousarray(scale, np.float32), f"{name}_scale")]
    if not blocked.symmetric:
        inputs.append(builder.initializer(zero.astype(storage), f"{name}_zero_point"))
    k_axis = 1 if wants_nk else 0
    attributes = {"axis": 1 - k_axis} if per_channel else {
        "axis": k_axis, "block_size": blocked.block_size}
    out = builder.op("DequantizeLinear", inputs, attributes, name=f"{name}_DequantizeLinear")
    out.name = f"{name}_dequantized"
    out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(q.shape)
    builder.insert_before(target.node)
    return out


def _storage_dtype(blocked: blockwise.Blocked) -> np.dtype:
    kind = {(4, True): ir.DataType.INT4, (4, False): ir.DataType.UINT4,
            (8, True): ir.DataType.INT8, (8, False): ir.DataType.UINT8}
    return kind[blocked.bits, blocked.symmetric].numpy()




def _attr(node: ir.Node, name: str, default: Any) -> Any:
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _trim(inputs: list[ir.Value | None]) -> list[ir.Value | None]:
    while inputs and inputs[-1] is None:
        inputs.pop()
    return inputs


def _nbits_block(size: int) -> bool:
    return size >= 16 and size & (size - 1) == 0


def _next_power_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()



def _listing(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _skip_notes(skipped: dict[str, list[str]]) -> list[str]:
    return [f"left float ({reason}): {_listing(names)}" for reason, names in skipped.items()]
