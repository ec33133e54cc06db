"""An additive attention mask recognised by what it computes, not by how it is spelled.

Exporters keep changing how the Hugging Face mask is written: ``(1 - m[:, None, None, :])
* c`` (what :mod:`.mask` reads structurally) became, in transformers 5, a
``Where(Expand(And(..., Gather(Flatten(Cast<bool>(m)), b * S + k))), 0, c)`` built from
Ranges and Shapes. Whatever the spelling, the fusion needs one fact: the value added to
the scores is ``c`` where ``m == 0`` and ``0`` where ``m == 1``, broadcastable to
``[B, heads, S, S]`` along the keys; ORT's Attention computes exactly that from the raw
2-D ``mask_index`` with ``mask_filter_value = c``.

So the subgraph that computes the mask value is cut out (back to graph inputs and
constants; a ``Shape`` whose input's shape is known from the mask's [B, S] becomes a fed
constant) and run on ``onnx.reference`` for several batch sizes and sequence lengths
(where the mask's dims are symbolic) and masks (all ones, all zeros, padded on either side,
random 0/1), and compared exactly with ``c * (1 - m)[:, None, None, :]``. Other graph inputs
the subgraph reads (``input_ids`` through the embeddings, for their shape) are fed zeros and
then ones: the value must not change. A sample is not a proof: a subgraph that agrees on
every probe but differs elsewhere (say, only from 100 tokens on) would be accepted; the
probes include the ones such masks are written to handle (padding, batches, all-masked
rows). Values other than 0 and 1 in ``m`` are not probed (ORT reads ``m > 0`` as kept).
A subgraph with a node whose result would hold more than ``_MAX_ELEMENTS`` (told from
its constants and known dims, :func:`onnxpress.ir.sizes.result_elements`) is not run: a
mask is [B, 1, S, S] at most, and a Range or Expand of constants to billions of elements
would be computed on every probe (an unknown dim counts as 1, so a size that only the
probe's B and S make huge, say ``Range(0, S * 1e9)``, is not foreseen).

The fusion also needs the mask's [B, S] to be the attention input's. Where the dims do not
say so (TorchScript exports: shape inference loses the tokens' names at the position
embedding's broadcast), a value the subgraph computes anyway whose dims carry the
attention input's symbols (the embeddings' output, whose Shape the mask reads) is the
witness: its Shape must come out [B, S] on every probe.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from onnxpress.ir.attention.values import dims, same_dim
from onnxpress.ir.sizes import result_elements

_MAX_NODES = 400  # a mask is a few dozen ops; beyond this it is not one (or too costly)
_SIZES = ((1, 5), (2, 7), (3, 4))  # (batch, sequence) where the mask's dims are symbolic
#: the largest value the probe computes: a causal mask's constant [1, 1, 2048, 2048] fits
_MAX_ELEMENTS = 1 << 24
_INTEGER = {
    ir.DataType.INT64, ir.DataType.INT32, ir.DataType.INT16, ir.DataType.INT8,
    ir.DataType.UINT8, ir.DataType.BOOL,
}


def probe_mask(value: ir.Value, x_dims: tuple | None) -> tuple[ir.Value, float] | str:
    """The integer [B, S] graph input ``m`` and the fill ``c`` with ``value == c * (1 -
    m)[:, None, None, :]`` (broadcastable to the scores) on every probe, ``m``'s [B, S]
    being the attention input's (``x_dims``), or why not."""
    if x_dims is None or len(x_dims) < 2:
        return "the attention input's [B, S] is unknown"
    cut = _cut(value)
    if isinstance(cut, str):
        return cut
    nodes, inputs, shapes = cut
    too_big = _too_big(nodes, shapes)
    if too_big:
        return too_big
    candidates = [v for v in inputs if v.dtype in _INTEGER and len(dims(v) or ()) == 2]
    if not candidates:
        return "the attention mask reads no integer [B, S] graph input"
    witness = _witness(nodes, shapes, x_dims)
    try:
        proto = _model(value, nodes, inputs, shapes, witness)
        evaluator = ReferenceEvaluator(proto)
    except Exception as error:  # any failure means: cannot tell
        return f"the attention mask's subgraph cannot be evaluated ({type(error).__name__})"
    reasons = []
    for source in candidates:
        tokens = dims(source)
        if witness is None and not all(same_dim(tokens[a], x_dims[a]) for a in (0, 1)):
            reasons.append(f"{source.name}: its [B, S] is not provably the attention input's")
            continue
        fill = _check(evaluator, source, inputs, shapes, witness is not None)
        if not isinstance(fill, str):
            return source, fill
        reasons.append(f"{source.name}: {fill}")
    return "the attention mask is not c * (1 - m) of an input m (" + "; ".join(reasons) + ")"


def _cut(value: ir.Value) -> tuple[list[ir.Node], list[ir.Value], list[ir.Node]] | str:
    """The nodes computing ``value`` in order, the graph inputs they read, and the Shape
    nodes whose outputs are fed instead of computed."""
    nodes: list[ir.Node] = []
    inputs: list[ir.Value] = []
    shapes: list[ir.Node] = []
    seen: set[ir.Node] = set()
    stack: list[tuple[ir.Value | None, bool]] = [(value, False)]
    while stack:  # iterative post-order: a node goes in after everything it reads
        current, expanded = stack.pop()
        node = current.producer() if current is not None else None
        if current is None or current.const_value is not None and not current.is_graph_input():
            continue
        if current.is_graph_input():
            if current not in inputs:
                inputs.append(current)
            continue
        if node is None:
            return "the attention mask reads a value from an enclosing graph"
        if expanded:
            nodes.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        if len(seen) > _MAX_NODES:
            return "the attention mask's subgraph is too large to probe"
        if node.domain not in ("", "ai.onnx") or node.op_type.startswith("Random") or any(
                a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                for a in node.attributes.values()):
            return f"the attention mask's subgraph has a {node.op_type} node"
        stack.append((current, True))
        if node.op_type == "Shape" and _known_shape(node.inputs[0]):
            shapes.append(node)  # fed: its input's dims are the mask's or static
            continue
        stack.extend((v, False) for v in node.inputs)
    return nodes, inputs, shapes


def _too_big(nodes: list[ir.Node], shapes: list[ir.Node]) -> str | None:
    """Why the subgraph is not run, where a node of it would compute too much."""
    opset = _opset(nodes, shapes)
    for node in nodes:
        count = None if node in shapes or opset is None else result_elements(node, opset)
        if count is not None and count > _MAX_ELEMENTS:
            return (f"the attention mask's subgraph is not run: {node.op_type} would compute "
                    f"{count} elements (> {_MAX_ELEMENTS})")
    return None


def _witness(nodes: list[ir.Node], shapes: list[ir.Node], x_dims: tuple) -> ir.Value | None:
    """A value the subgraph computes whose leading dims carry the attention input's."""
    for node in nodes:
        if node in shapes:
            continue
        for value in (*node.inputs, *node.outputs):
            shape = dims(value)
            if shape and len(shape) >= 2 and all(same_dim(shape[a], x_dims[a]) for a in (0, 1)):
                return value
    return None


def _known_shape(value: ir.Value | None) -> bool:
    shape = dims(value)
    return shape is not None and all(
        isinstance(d, int) or d.value is not None and not d.value.startswith("unk__")
        for d in shape)


def _model(value: ir.Value, nodes: list[ir.Node], inputs: list[ir.Value],
           shapes: list[ir.Node], witness: ir.Value | None) -> onnx.ModelProto:
    """The subgraph as a model: graph inputs and fed Shapes as inputs (named ``i0``, ``s0``
    ...), constants as initializers, ``value`` as the output (and the witness's shape)."""
    names: dict[ir.Value, str] = {v: f"i{k}" for k, v in enumerate(inputs)}
    names.update({node.outputs[0]: f"s{k}" for k, node in enumerate(shapes)})
    computed = set(nodes)
    initializers = []

    def name(v: ir.Value | None) -> str:
        if v is None:
            return ""
        if v not in names:
            names[v] = f"v{len(names)}"
            if v.producer() not in computed:  # a constant: the walk stopped at it
                tensor = ir.serde.serialize_tensor(v.const_value)
                tensor.name = names[v]
                initializers.append(tensor)
        return names[v]

    protos = []
    for node in nodes:
        if node in shapes:
            continue
        proto = ir.serde.serialize_node(node)
        proto.input[:] = [name(v) for v in node.inputs]
        proto.output[:] = [name(v) for v in node.outputs]
        protos.append(proto)
    graph_inputs = [onnx.helper.make_tensor_value_info(names[v], int(v.dtype), None)
                    for v in inputs]
    graph_inputs += [onnx.helper.make_tensor_value_info(names[n.outputs[0]],
                                                        onnx.TensorProto.INT64, None)
                     for n in shapes]
    outputs = [onnx.helper.make_tensor_value_info(name(value), int(value.dtype), None)]
    if witness is not None:
        protos.append(onnx.helper.make_node("Shape", [name(witness)], ["witness"]))
        outputs.append(onnx.helper.make_tensor_value_info("witness", onnx.TensorProto.INT64,
                                                         None))
    graph = onnx.helper.make_graph(protos, "mask_probe", graph_inputs, outputs, initializers)
    version = _opset(nodes, shapes)
    if version is None:
        raise ValueError("no standard opset")
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", version)],
                                  ir_version=8)


def _opset(nodes: list[ir.Node], shapes: list[ir.Node]) -> int | None:
    """The standard opset of the graph the subgraph was cut from."""
    owner = (nodes or shapes)[-1].graph if nodes or shapes else None
    return None if owner is None else owner.opset_imports.get(
        "", owner.opset_imports.get("ai.onnx"))


def _check(evaluator: ReferenceEvaluator, source: ir.Value, inputs: list[ir.Value],
           shapes: list[ir.Node], witnessed: bool) -> float | str:
    """The fill when ``source`` is the mask on every probe, else why not."""
    fill = None
    for size in _sizes(source):
        bound = _binding(source, size)
        for mask in _masks(size):
            results = []
            for other in (0, 1):
                feeds = _feeds(source, mask, inputs, shapes, bound, other)
                if isinstance(feeds, str):
                    return feeds
                try:
                    result, *witness = evaluator.run(None, feeds)
                except Exception as error:  # an op the reference cannot run: cannot tell
                    return f"it fails on a probe ({type(error).__name__})"
                if witnessed and list(witness[0][:2]) != list(size):
                    return "its [B, S] is not the attention input's on a probe"
                results.append(np.asarray(result))
            if results[0].shape != results[1].shape or not np.array_equal(*results):
                return "it depends on other inputs' values"
            fill = _compare(results[0], mask, fill)
            if isinstance(fill, str):
                return fill
    if fill is None:
        return "no probe masked a position"
    return fill


def _sizes(source: ir.Value) -> list[tuple[int, int]]:
    batch, tokens = dims(source)
    return sorted({(batch if isinstance(batch, int) else b, tokens if isinstance(tokens, int)
                    else s) for b, s in _SIZES})


def _binding(source: ir.Value, size: tuple[int, int]) -> dict[str, int]:
    return {d.value: n for d, n in zip(dims(source), size) if not isinstance(d, int)}


def _masks(size: tuple[int, int]) -> list[np.ndarray]:
    batch, tokens = size
    rng = np.random.default_rng(tokens * 31 + batch)
    right = np.ones(size, np.int64)
    right[:, tokens // 2 + 1:] = 0
    right[0] = 1
    left = np.ones(size, np.int64)
    left[-1, : tokens // 2] = 0
    masks = [np.ones(size, np.int64), np.zeros(size, np.int64), right, left]
    masks += [rng.integers(0, 2, size=size) for _ in range(3)]
    return masks


def _feeds(source, mask, inputs, shapes, bound, other) -> dict[str, np.ndarray] | str:
    feeds = {}
    for k, v in enumerate(inputs):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(int(v.dtype))
        if v is source:
            feeds[f"i{k}"] = mask.astype(dtype)
            continue
        shape = _concrete(dims(v), bound)
        if shape is None:
            return f"{v.name}'s shape is not the mask's"
        feeds[f"i{k}"] = np.full(shape, other, dtype)
    for k, node in enumerate(shapes):
        shape = _concrete(dims(node.inputs[0]), bound)
        if shape is None:
            return "a Shape in it reads a tensor whose shape is not the mask's"
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", len(shape))
        feeds[f"s{k}"] = np.array(shape[start:end], np.int64)
    return feeds


def _concrete(shape: tuple | None, bound: dict[str, int]) -> list[int] | None:
    if shape is None:
        return None
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif d.value in bound:
            out.append(bound[d.value])
        else:
            return None
    return out


def _compare(result: np.ndarray, mask: np.ndarray, fill: float | None) -> float | None | str:
    """``result`` against ``fill * (1 - mask)[:, None, None, :]``; the fill (found at the
    first masked position if not yet known)."""
    batch, tokens = mask.shape
    if result.dtype != np.float32 or result.ndim > 4:
        return "it is not a float32 tensor of rank <= 4"
    result = result.reshape((1,) * (4 - result.ndim) + result.shape)
    if result.shape[0] not in (1, batch) or result.shape[1] != 1 or result.shape[2] not in (
            1, tokens) or result.shape[3] != tokens or (result.shape[0] == 1 and batch > 1):
        return f"its shape {list(result.shape)} is not [B, 1, 1 | S, S]"
    kept = mask[:, None, None, :] != 0
    if fill is None and not kept.all():
        masked = np.broadcast_to(result, (batch, 1, result.shape[2], tokens))[
            np.broadcast_to(~kept, (batch, 1, result.shape[2], tokens))]
        fill = float(masked.flat[0])
        if not np.isfinite(fill) or fill == 0.0:
            return f"its masked value {fill} is not finite and non-zero"
    want = np.where(kept, np.float32(0.0), np.float32(fill if fill is not None else 0.0))
    if not np.array_equal(np.broadcast_to(result, np.broadcast_shapes(result.shape, want.shape)),
                          np.broadcast_to(want, np.broadcast_shapes(result.shape, want.shape))):
        return "it differs from c * (1 - m)[:, None, None, :] on a probe"
    return fill
