"""LLaMA-style attention written out in ops (grouped-query heads, rotary, KV cache) ->
``com.microsoft.GroupQueryAttention``.

- ``Reshape(Transpose(Where(IsNaN(p), 0, p) @ rep(V)))``, with
  ``p = Softmax(rot(q) * s1 @ (rep(K)^T * s2) + bias)``, ``q = heads(x Wq)``,
  ``K = Concat(past_key, rot(heads(x Wk)))``, ``V = Concat(past_value, heads(x Wv))``
  -> ``GroupQueryAttention(x Wq, x Wk, x Wv, past_key, past_value, seqlens_k=T-1,
  total_sequence_length=T, cos_cache, sin_cache, attention_bias=bias, causal=0,
  do_rotary=1, scale=s1*s2)`` followed by ``Where(IsNaN(out), 0, out)``; the present
  Concats become its present outputs

where ``heads`` is Reshape to ``[B, S, heads, H]`` + Transpose(0, 2, 1, 3), ``rot`` the
half-split rotary ``x * cos + Concat(-x[..., H/2:], x[..., :H/2]) * sin`` with
``cos = Cos(Concat(f, f))`` (likewise sin) of shape ``[1, S, H]``, ``rep`` the
Unsqueeze/Expand/Reshape that repeats each KV head ``heads / kv_heads`` times, and ``^T``
a Transpose of the last two axes (or the exporter's Reshape/Transpose/Reshape spelling of
it); the past Concats, the rotary and the NaN guard are each optional.

Exact semantics, not ORT's usual contract: ``seqlens_k`` and ``total_sequence_length`` are
taken from the shapes (every sequence "full"), so ORT applies no padding or causal mask of
its own (``causal=0``); the exported additive mask, causal part and padding included, goes
in unchanged as ``attention_bias``. The rotary tables are the graph's own ``cos``/``sin``
rows for the current positions, padded at the top to ``T`` rows (ORT reads row
``past + i`` for query ``i``), so there is no maximum length. A query whose every key is
masked gets NaN from ORT and 0 from the export's guard: the ``Where`` restores the 0. Within
float rounding otherwise (the scale applied once, ORT's own softmax and rotary: ~1e-6 of
the output scale).

One input shape ORT rejects (it raises, nothing is computed wrongly): batch > 1 *and* more
than one new token *and* a non-empty past ("batch_size must be 1 when sequence_length > 1
and past context is given"), i.e. batched chunked prefill. Graphs with a past input are
therefore fused only with ``FuseForOrt(group_query_attention_past=True)``; a graph without
past (the no-cache export) accepts every shape. ORT's rotary also needs ``H % 16 == 0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.attention.values import const, dims, same_dim, same_dims
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import MS_DOMAIN

__all__ = ["fuse_group_query_attention"]


@dataclasses.dataclass
class _Side:
    """One of q, k, v: the projection output [B, S, n*H] and what was done to its heads."""
    projection: ir.Value
    heads: int
    rotary: tuple[ir.Value, ir.Value] | None  # the [1, S, H] cos and sin
    past: ir.Value | None = None
    present: ir.Value | None = None  # the Concat(past, .) output


@dataclasses.dataclass
class _Block:
    q: _Side
    k: _Side
    v: _Side
    head_size: int
    scale: float
    bias: ir.Value | None
    guarded: bool  # Where(IsNaN(p), 0, p) after the Softmax
    final: ir.Value  # [B, S, N*H]


class _Fail(Exception):
    pass


def _producer(value: ir.Value | None, op_type: str) -> ir.Node:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != op_type or node.domain != "":
        raise _Fail(f"expected {op_type}, found {node.op_type if node else 'an input'}")
    return node


def _ints(value: ir.Value | None) -> list[int] | None:
    array = const(value)
    return None if array is None else [int(a) for a in array.reshape(-1)]


def _scalar(value: ir.Value | None) -> float | None:
    array = const(value)
    if array is None or array.size != 1 or array.dtype != np.float32:
        return None
    return float(array.reshape(()))


def _perm(node: ir.Node) -> list[int]:
    perm = node.attributes.get_ints("perm")
    return list(perm) if perm is not None else []


def fuse_group_query_attention(graph: ir.Graph, declines, *, with_past: bool) -> int:
    """Fuse every block it can prove; the count. ``with_past``: also blocks that read a
    past KV cache (see the module docstring for the shape ORT then rejects)."""
    count = 0
    shared: dict = {}
    for softmax in [n for n in graph if n.op_type == "Softmax" and n.domain == ""]:
        try:
            block = _match(softmax)
            if block.k.past is not None and not with_past:
                raise _Fail("it reads a past KV cache (group_query_attention_past=False)")
        except _Fail as failure:
            declines.record(softmax, str(failure))
            continue
        _rewrite(graph, block, shared)
        count += 1
    return count


def _match(softmax: ir.Node) -> _Block:
    if softmax.attributes.get_int("axis", -1) not in (-1, 3):
        raise _Fail("the Softmax is not over the last axis")
    probs = softmax.outputs[0]
    users = [u.node for u in probs.uses()]
    guarded = False
    if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
        where = next(u for u in users if u.op_type == "Where")
        isnan = next(u for u in users if u.op_type == "IsNaN")
        if (where.inputs[0] is not isnan.outputs[0] or where.inputs[2] is not probs
                or _scalar(where.inputs[1]) != 0.0):
            raise _Fail("the NaN guard after the Softmax is not Where(IsNaN(p), 0, p)")
        probs, guarded = where.outputs[0], True
        users = [u.node for u in probs.uses()]
    if len(users) != 1 or users[0].op_type != "MatMul" or users[0].inputs[0] is not probs:
        raise _Fail("the probabilities do not feed one MatMul with V")
    weighted = users[0]
    scores = softmax.inputs[0]
    bias = None
    add = scores.producer()
    if add is not None and add.op_type == "Add":
        product, bias = add.inputs
        if product.producer() is None or product.producer().op_type != "MatMul":
            product, bias = bias, product
        scores = product
    product = _producer(scores, "MatMul")
    q_scaled, k_scaled = product.inputs
    q_value, scale_q = _unscale(q_scaled)
    kt_value, scale_k = _unscale(k_scaled)
    q = _query(q_value)
    k = _key_value(_untranspose(kt_value), rotary=True)
    v = _key_value(weighted.inputs[1], rotary=False)
    head_size = _head_size(q_value)
    if q.heads % k.heads or k.heads != v.heads:
        raise _Fail("the query heads are not a multiple of the KV heads")
    if (q.rotary is None) != (k.rotary is None) or (
            q.rotary is not None and q.rotary != k.rotary):
        raise _Fail("q and k are not rotated alike")
    if q.rotary is not None and head_size % 16:
        raise _Fail(f"ORT's rotary needs a head size divisible by 16, not {head_size}")
    if (k.past is None) != (v.past is None):
        raise _Fail("only one of key and value has a past")
    if bias is not None:
        _check_bias(bias, q_value, kt_value)
    final = _output(weighted.outputs[0], q)
    return _Block(q, k, v, head_size, scale_q * scale_k, bias, guarded, final)


def _unscale(value: ir.Value) -> tuple[ir.Value, float]:
    """Peel scalar Mul/Div off ``value``; the value under them and their product."""
    scale = 1.0
    while (node := value.producer()) is not None and node.op_type in ("Mul", "Div"):
        a, b = node.inputs
        factor = _scalar(b)
        if factor is None and node.op_type == "Mul" and _scalar(a) is not None:
            a, factor = b, _scalar(a)
        if factor is None or len(value.uses()) != 1:
            break
        scale *= factor if node.op_type == "Mul" else 1.0 / factor
        value = a
    return value, float(np.float32(scale))


def _head_size(value: ir.Value) -> int:
    shape = dims(value)
    if shape is None or len(shape) != 4 or not isinstance(shape[3], int):
        raise _Fail("the head size is not known")
    return shape[3]


def _heads(value: ir.Value) -> tuple[ir.Value, int]:
    """``Transpose(Reshape(p, [B, S, n, H]), (0, 2, 1, 3))`` -> (p, n)."""
    transpose = _producer(value, "Transpose")
    if _perm(transpose) != [0, 2, 1, 3]:
        raise _Fail("the heads are not split by Transpose(0, 2, 1, 3)")
    reshape = _producer(transpose.inputs[0], "Reshape")
    projection, split = reshape.inputs[0], dims(reshape.outputs[0])
    shape = dims(projection)
    if (shape is None or split is None or len(shape) != 3 or len(split) != 4
            or not same_dims(shape[:2], split[:2]) or not isinstance(split[2], int)
            or not isinstance(split[3], int) or shape[2] != split[2] * split[3]):
        raise _Fail("the head split is not provably [B, S, n*H] -> [B, S, n, H]")
    return projection, split[2]


def _rotary(value: ir.Value) -> tuple[ir.Value, tuple[ir.Value, ir.Value] | None]:
    """``x * cos + Concat(-x2, x1) * sin`` -> (x, (cos, sin)), or (value, None)."""
    add = value.producer()
    if add is None or add.op_type != "Add":
        return value, None
    for first, second in (add.inputs, add.inputs[::-1]):
        plain, rotated = first.producer(), second.producer()
        if plain is None or rotated is None or plain.op_type != "Mul" or rotated.op_type != "Mul":
            continue
        for x, cos in (plain.inputs, plain.inputs[::-1]):
            for half, sin in (rotated.inputs, rotated.inputs[::-1]):
                if _is_rotate_half(half, x):
                    return x, (_table(cos), _table(sin))
    raise _Fail("an Add before the attention is not a half-split rotary embedding")


def _is_rotate_half(value: ir.Value, x: ir.Value) -> bool:
    node = value.producer()
    shape = dims(x)
    if (node is None or node.op_type != "Concat" or len(node.inputs) != 2 or shape is None
            or not isinstance(shape[-1], int) or shape[-1] % 2):
        return False
    if node.attributes.get_int("axis", 0) not in (-1, len(shape) - 1):
        return False
    neg = node.inputs[0].producer()
    if neg is None or neg.op_type != "Neg":
        return False
    half = shape[-1] // 2
    return (_slice_of(neg.inputs[0], x, half, shape[-1], len(shape))
            and _slice_of(node.inputs[1], x, 0, half, len(shape)))


def _slice_of(value: ir.Value, x: ir.Value, start: int, end: int, rank: int) -> bool:
    node = value.producer()
    if node is None or node.op_type != "Slice" or node.inputs[0] is not x:
        return False
    inputs = list(node.inputs) + [None] * (5 - len(node.inputs))
    starts, ends, axes = _ints(inputs[1]), _ints(inputs[2]), _ints(inputs[3])
    steps = _ints(inputs[4]) if inputs[4] is not None else [1]
    if starts is None or ends is None or axes is None or len(starts) != 1:
        return False
    return (axes[0] % rank == rank - 1 and starts[0] == start and steps == [1]
            and (ends[0] == end or (end == 2 * start and ends[0] >= end)))


def _table(value: ir.Value) -> ir.Value:
    """The [1, 1, S, H] cos/sin operand -> its [1, S, H] table, checked to be
    ``Cos|Sin(Concat(f, f))`` so that its first half holds every value."""
    unsqueeze = _producer(value, "Unsqueeze")
    if _ints(unsqueeze.inputs[1]) != [1]:
        raise _Fail("the rotary table is not unsqueezed at axis 1")
    table = unsqueeze.inputs[0]
    trig = table.producer()
    if trig is None or trig.op_type not in ("Cos", "Sin"):
        raise _Fail("the rotary table is not a Cos or Sin")
    concat = _producer(trig.inputs[0], "Concat")
    shape = dims(table)
    if (len(concat.inputs) != 2 or concat.inputs[0] is not concat.inputs[1]
            or concat.attributes.get_int("axis", 0) not in (-1, 2)
            or shape is None or len(shape) != 3 or shape[0] != 1):
        raise _Fail("the rotary table is not Cos/Sin(Concat(f, f)) of shape [1, S, H]")
    return table


def _query(value: ir.Value) -> _Side:
    rotated, rotary = _rotary(value)
    projection, heads = _heads(rotated)
    return _Side(projection, heads, rotary)


def _repeat(value: ir.Value) -> ir.Value:
    """Undo ``Reshape(Expand(Unsqueeze(x, 2), [B, kv, r, T, H]), [B, kv*r, T, H])``."""
    node = value.producer()
    if node is None or node.op_type != "Reshape":
        return value
    expand = _producer(node.inputs[0], "Expand")
    unsqueeze = _producer(expand.inputs[0], "Unsqueeze")
    x = unsqueeze.inputs[0]
    before, expanded, after = dims(x), dims(expand.outputs[0]), dims(value)
    if (_ints(unsqueeze.inputs[1]) != [2] or before is None or expanded is None
            or after is None or len(before) != 4 or len(expanded) != 5 or len(after) != 4
            or not same_dims(expanded[:2] + expanded[3:], before)
            or not isinstance(expanded[2], int) or not isinstance(before[1], int)
            or after[1] != before[1] * expanded[2] or not same_dims(after[2:], before[2:])
            or not same_dim(after[0], before[0])):
        raise _Fail("the KV heads are not repeated by Unsqueeze/Expand/Reshape")
    return x


def _untranspose(value: ir.Value) -> ir.Value:
    """K^T -> K: Transpose(0, 1, 3, 2), or Reshape([-1, T, H]) / Transpose(0, 2, 1) /
    Reshape([B, N, H, T])."""
    node = value.producer()
    if node is not None and node.op_type == "Transpose" and _perm(node) == [0, 1, 3, 2]:
        return node.inputs[0]
    outer = _producer(value, "Reshape")
    transpose = _producer(outer.inputs[0], "Transpose")
    inner = _producer(transpose.inputs[0], "Reshape")
    key = inner.inputs[0]
    k, merged, flipped, out = (dims(v) for v in (key, inner.outputs[0], transpose.outputs[0],
                                                 value))
    if (_perm(transpose) != [0, 2, 1] or None in (k, merged, out) or len(k) != 4
            or len(merged) != 3 or len(out) != 4 or not same_dims(merged[1:], k[2:])
            or not same_dims(out, (k[0], k[1], k[3], k[2]))):
        raise _Fail("the keys are not transposed over their last two axes")
    return key


def _key_value(value: ir.Value, *, rotary: bool) -> _Side:
    value = _repeat(value)
    past = present = None
    node = value.producer()
    if node is not None and node.op_type == "Concat":
        shape = dims(value)
        if (len(node.inputs) != 2 or shape is None
                or node.attributes.get_int("axis", 0) not in (-2, 2)):
            raise _Fail("the KV cache is not Concat(past, new) over the sequence axis")
        past, present, value = node.inputs[0], value, node.inputs[1]
        if not past.is_graph_input():
            raise _Fail("the past KV is not a graph input")
    new, rotation = _rotary(value) if rotary else (value, None)
    projection, heads = _heads(new)
    return _Side(projection, heads, rotation, past, present)


def _check_bias(bias: ir.Value, q: ir.Value, kt: ir.Value) -> None:
    shape, q_shape, kt_shape = dims(bias), dims(q), dims(kt)
    if (shape is None or q_shape is None or kt_shape is None or len(shape) != 4
            or bias.dtype != ir.DataType.FLOAT or shape[1] != 1
            or not (shape[0] == 1 or same_dim(shape[0], q_shape[0]))
            or not same_dim(shape[2], q_shape[2]) or not same_dim(shape[3], kt_shape[3])):
        raise _Fail("the additive mask is not provably [B | 1, 1, S, T]")


def _output(value: ir.Value, q: _Side) -> ir.Value:
    users = [u.node for u in value.uses()]
    if len(users) != 1 or users[0].op_type != "Transpose" or _perm(users[0]) != [0, 2, 1, 3]:
        raise _Fail("the attention output is not transposed back by (0, 2, 1, 3)")
    merged = [u.node for u in users[0].outputs[0].uses()]
    if len(merged) != 1 or merged[0].op_type != "Reshape":
        raise _Fail("the attention output is not merged by one Reshape")
    final = merged[0].outputs[0]
    if not same_dims(dims(final), dims(q.projection)):
        raise _Fail("the merged output is not provably the query's shape [B, S, N*H]")
    return final


def _rewrite(graph: ir.Graph, block: _Block, shared: dict) -> None:
    builder = Builder(graph)
    lengths = _lengths(builder, block, shared)
    inputs: list[ir.Value | None] = [
        block.q.projection, block.k.projection, block.v.projection, block.k.past,
        block.v.past, lengths["seqlens"], lengths["total"]]
    attributes = {"num_heads": block.q.heads, "kv_num_heads": block.k.heads,
                  "scale": block.scale, "causal": 0}
    if block.q.rotary is not None:
        inputs += [_cache(builder, table, lengths, shared) for table in block.q.rotary]
        attributes["do_rotary"] = 1
    if block.bias is not None:
        inputs += [None] * (10 - len(inputs)) + [block.bias]
    name = (block.final.producer().name or "attention") + "_gqa"
    out, present_key, present_value = builder.op_multi(
        "GroupQueryAttention", inputs, attributes, num_outputs=3, domain=MS_DOMAIN, name=name)
    if block.guarded:
        zero = builder.initializer(np.zeros((), np.float32), "gqa_zero")
        out = builder.op("Where", [builder.op("IsNaN", [out]), zero, out])
    out.dtype, out.shape = block.final.dtype, block.final.shape
    builder.insert_after(block.final.producer())
    _replace(block.final, out)
    for side, new in ((block.k, present_key), (block.v, present_value)):
        if side.present is not None:
            new.dtype, new.shape = side.present.dtype, side.present.shape
            _replace(side.present, new)
        else:
            new.name = ""


def _replace(old: ir.Value, new: ir.Value) -> None:
    if old.is_graph_output():
        name = old.name
        old.name = f"{name}_unfused"
        new.name = name
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def _lengths(builder: Builder, block: _Block, shared: dict) -> dict:
    """seqlens_k = T - 1 per batch row and total_sequence_length = T (int32), T = past + S,
    from the shapes: built once per (query, past) source and placed with the first block."""
    key = ("lengths", _dim_key(block.q.projection, 0), _dim_key(block.q.projection, 1),
           _dim_key(block.k.past, 2) if block.k.past is not None else None)
    if key in shared:
        return shared[key]

    def shape(value: ir.Value, start: int) -> ir.Value:
        return builder.op("Shape", [value], {"start": start, "end": start + 1})

    batch, sequence = shape(block.q.projection, 0), shape(block.q.projection, 1)
    past = shape(block.k.past, 2) if block.k.past is not None else None
    total = builder.op("Add", [past, sequence]) if past is not None else sequence
    one = builder.initializer(np.ones(1, np.int64), "gqa_one")
    last = builder.op("Expand", [builder.op("Sub", [total, one]), batch])
    lengths = {
        "seqlens": builder.op("Cast", [last], {"to": ir.DataType.INT32}),
        "total": builder.op("Cast", [builder.op("Squeeze", [total])],
                            {"to": ir.DataType.INT32}),
        "past": past,
    }
    shared[key] = lengths
    return lengths


def _dim_key(value: ir.Value, axis: int):
    shape = dims(value)
    dim = shape[axis] if shape is not None and len(shape) > axis else None
    if isinstance(dim, int):
        return dim
    if dim is not None and dim.value is not None:
        return dim.value
    return id(value)  # unnamed: not shared


def _cache(builder: Builder, table: ir.Value, lengths: dict, shared: dict) -> ir.Value:
    """The [1, S, H] table -> ORT's [T, H/2] cache: the first half of each row, with ``past``
    rows of zeros on top (ORT reads row past + i for query i)."""
    key = ("cache", table, id(lengths))
    if key in shared:
        return shared[key]
    half = dims(table)[2] // 2
    starts = builder.initializer(np.array([0], np.int64), "gqa_zero_start")
    ends = builder.initializer(np.array([half], np.int64), "gqa_half")
    axes = builder.initializer(np.array([2], np.int64), "gqa_last_axis")
    rows = builder.op("Squeeze", [builder.op("Slice", [table, starts, ends, axes]),
                                  builder.initializer(np.array([0], np.int64), "gqa_axis0")])
    if lengths["past"] is not None:
        zeros = builder.initializer(np.zeros(3, np.int64), "gqa_pads_tail")
        pads = builder.op("Concat", [lengths["past"], zeros], {"axis": 0})
        rows = builder.op("Pad", [rows, pads])
    shared[key] = rows
    return rows
