"""``fuse-for-ort`` on LLaMA-architecture decoders (``rms_norm``, ``group_query_attention``):
structure, numerics against ONNX Runtime on the original model, validity (``verify`` +
``onnx.checker``), on a tiny random LLaMA exported with and without KV cache, and small
hand-built RMSNorm graphs, positive and negative.

Tolerance: every output within 1e-5 of its largest |value| (float rounding of a fused
kernel: measured ~2e-7 on logits and present key/values)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION, Within, assert_close, checked_proto, run_ort

import onnxpress
from onnxpress.passes.ort_fusion import FuseForOrt

TOL = Within(1e-5)
MS = "com.microsoft"
LAYERS, KV_HEADS, HEAD = 2, 2, 16


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The tiny LLaMA (2 layers, 4 heads over 2 KV heads) without and with cache, cleaned."""
    from onnxpress.models.smollm2 import export_llm, tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_llama(0, layers=LAYERS)
    paths = {}
    for kv in (False, True):
        raw = export_llm(model, str(folder / f"raw-{kv}.onnx"), kv_cache=kv)
        paths[kv] = folder / f"clean-{kv}.onnx"
        onnxpress.save(onnxpress.compile(str(raw), "cleanup"), paths[kv])
    return paths


def fuse(source, **options):
    options.setdefault("rms_norm", True)  # off by default (not measurably faster)
    model = onnxpress.load(source)
    result = FuseForOrt(**options)(model)
    return checked_proto(model), result


def count(proto, op_type, domain=None):
    return sum(1 for n in proto.graph.node
               if n.op_type == op_type and (domain is None or n.domain == domain))


def feeds(batch, sequence, past, *, kv, pad=None):
    """``pad``: "left" masks the first two tokens of the last row, "right" the last two."""
    rng = np.random.default_rng(batch * 100 + sequence * 10 + past)
    mask = np.ones((batch, past + sequence), np.int64)
    if pad == "left":
        mask[-1, :2] = 0
    elif pad == "right":
        mask[-1, -2:] = 0
    out = {"input_ids": rng.integers(0, 256, (batch, sequence)), "attention_mask": mask}
    if kv:
        for i in range(LAYERS):
            for kind in ("key", "value"):
                out[f"past_{kind}_{i}"] = rng.standard_normal(
                    (batch, KV_HEADS, past, HEAD)).astype(np.float32)
    return out


def assert_same(original, fused, inputs):
    assert_close(run_ort(original, inputs, optimize=True), run_ort(fused, inputs, optimize=True),
                 TOL)


# --------------------------------------------------------------------------- tiny LLaMA


def test_no_cache_export_fuses_every_layer(exports):
    path = exports[False]
    out, result = fuse(path)
    assert result.stats["group_query_attention"] == LAYERS
    assert result.stats["rms_norm"] == 2 * LAYERS  # every norm after a residual Add
    assert count(out, "GroupQueryAttention", MS) == LAYERS
    assert count(out, "SkipSimplifiedLayerNormalization", MS) == 2 * LAYERS
    assert count(out, "Softmax") == 0 and count(out, "Neg") == 0  # rotary absorbed
    assert count(out, "Pow") == 1  # the first norm, with no Add before it, stays
    for pad in (None, "left", "right"):  # left padding: fully masked query rows
        assert_same(path, out, feeds(2, 7, 0, kv=False, pad=pad))


def test_kv_export_keeps_attention_by_default(exports):
    path = exports[True]
    out, result = fuse(path)
    assert result.stats["group_query_attention"] == 0
    assert result.stats["rms_norm"] == 2 * LAYERS
    assert count(out, "Softmax") == LAYERS
    assert sum("reads a past KV cache" in note for note in result.notes) == LAYERS
    assert_same(path, out, feeds(2, 3, 4, kv=True, pad="left"))


@pytest.mark.parametrize(("batch", "sequence", "past", "pad"), [
    (2, 6, 0, "left"),   # prefill into an empty cache
    (1, 4, 5, "left"),   # a chunk after a past, batch 1
    (2, 1, 7, "left"),   # decoding one token, batch 2, left padding in the past
    (2, 1, 7, "right"),
])
def test_kv_export_with_past_option(exports, batch, sequence, past, pad):
    path = exports[True]
    out, result = fuse(path, group_query_attention_past=True)
    assert result.stats["group_query_attention"] == LAYERS
    assert count(out, "GroupQueryAttention", MS) == LAYERS
    assert count(out, "Concat") < count(onnx.load(path), "Concat")  # the cache Concats went
    assert [o.name for o in out.graph.output] == [o.name for o in onnx.load(path).graph.output]
    assert_same(path, out, feeds(batch, sequence, past, kv=True, pad=pad))


def test_kv_option_condition_batched_chunk_with_past_raises(exports):
    """The documented condition of ``group_query_attention_past``: ORT refuses (it does not
    compute a wrong answer) batch > 1 with several new tokens after a non-empty past."""
    out, _ = fuse(exports[True], group_query_attention_past=True)
    with pytest.raises(Exception, match="batch_size must be 1"):
        run_ort(out, feeds(2, 3, 4, kv=True))


def _edited(path, tmp_path, edit):
    proto = onnx.load(path)
    edit(proto.graph)
    out = tmp_path / "edited.onnx"
    onnx.save(proto, out)
    return out


def _swap_rotate_half(graph):
    for node in graph.node:  # Concat(Neg(x2), x1) -> Concat(x1, Neg(x2)): not rotate_half
        producers = {o: n for n in graph.node for o in n.output}
        if node.op_type == "Concat" and len(node.input) == 2 and \
                producers.get(node.input[0], node).op_type == "Neg":
            node.input[0], node.input[1] = node.input[1], node.input[0]


def _nan_guard_one(graph):
    ones = numpy_helper.from_array(np.ones((), np.float32), "guard_one")
    graph.initializer.append(ones)
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "Where" and producers.get(node.input[0]) is not None and \
                producers[node.input[0]].op_type == "IsNaN":
            node.input[1] = "guard_one"


@pytest.mark.parametrize(("edit", "reason"), [
    (_swap_rotate_half, "not a half-split rotary"),
    (_nan_guard_one, "not Where(IsNaN(p), 0, p)"),
])
def test_attention_variants_that_must_not_fuse(exports, tmp_path, edit, reason):
    path = _edited(exports[False], tmp_path, edit)
    out, result = fuse(path)
    assert result.stats["group_query_attention"] == 0
    assert count(out, "Softmax") == LAYERS
    assert sum(reason in note for note in result.notes) == LAYERS, result.notes
    assert_same(path, out, feeds(2, 5, 0, kv=False, pad="left"))


# --------------------------------------------------------------------------- RMSNorm


def rms_model(*, form="reciprocal", swap=False, exponent=2.0, axes=(-1,), keep_sum=False,
              weight_len=8):
    """``w * (t * Reciprocal(Sqrt(ReduceMean(t^2) + eps)))``, ``t = a + b`` of [2, 3, 8]."""
    f = TensorProto.FLOAT
    inits = [numpy_helper.from_array(np.float32(exponent), "two"),
             numpy_helper.from_array(np.array(axes, np.int64), "axes"),
             numpy_helper.from_array(np.float32(1e-5), "eps"),
             numpy_helper.from_array(np.float32(1.0), "one"),
             numpy_helper.from_array(np.linspace(0.5, 1.5, weight_len, dtype=np.float32), "w")]
    nodes = [helper.make_node("Add", ["a", "b"], ["t"]),
             helper.make_node("Pow", ["t", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["mean"], keepdims=1),
             helper.make_node("Add", ["mean", "eps"], ["var"]),
             helper.make_node("Sqrt", ["var"], ["root"])]
    if form == "divide":
        nodes.append(helper.make_node("Div", ["t", "root"], ["normed"]))
    else:
        nodes.append(helper.make_node("Reciprocal", ["root"], ["inv"]) if form == "reciprocal"
                     else helper.make_node("Div", ["one", "root"], ["inv"]))
        nodes.append(helper.make_node("Mul", ["inv", "t"] if swap else ["t", "inv"], ["normed"]))
    nodes.append(helper.make_node("Mul", ["normed", "w"] if swap else ["w", "normed"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", f, [2, 3, 8])]
    if keep_sum:
        nodes.append(helper.make_node("Add", ["t", "y"], ["z"]))  # the residual stream
        outputs.append(helper.make_tensor_value_info("z", f, [2, 3, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, f, [2, 3, 8])
                                           for n in ("a", "b")], outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=IR_VERSION)


def rms_feeds():
    rng = np.random.default_rng(1)
    return {n: rng.standard_normal((2, 3, 8)).astype(np.float32) for n in ("a", "b")}


@pytest.mark.parametrize("form", ["reciprocal", "one_over", "divide"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("keep_sum", [False, True])
def test_rms_norm_variants(form, swap, keep_sum):
    proto = rms_model(form=form, swap=swap, keep_sum=keep_sum)
    out, result = fuse(proto)
    assert result.stats["rms_norm"] == 1
    ops = [(n.domain, n.op_type) for n in out.graph.node]
    assert ops[0] == (MS, "SkipSimplifiedLayerNormalization")
    assert ops[1:] == ([("", "Add")] if keep_sum else [])
    assert_same(proto, out, rms_feeds())


@pytest.mark.parametrize(("kw", "reason"), [
    ({"exponent": 3.0}, "exponent is not the constant 2"),
    ({"axes": (1,)}, "not over the last axis"),
    ({"axes": (1, 2)}, "not over the last axis"),
    ({"weight_len": 1}, "weight's length is not provably"),
])
def test_rms_norm_that_must_not_fuse(kw, reason):
    proto = rms_model(**kw)
    out, result = fuse(proto)
    assert result.stats["rms_norm"] == 0 and count(out, "Pow") == 1
    assert any(reason in note for note in result.notes), result.notes


def test_rms_norm_is_off_by_default(exports):
    model = onnxpress.load(exports[False])
    result = FuseForOrt()(model)
    assert result.stats["rms_norm"] == 0 and result.stats["group_query_attention"] == LAYERS


def test_options_off_change_nothing(exports):
    out, result = fuse(exports[False], rms_norm=False, group_query_attention=False)
    assert result.stats["rms_norm"] == 0 and result.stats["group_query_attention"] == 0
    assert count(out, "Softmax") == LAYERS and count(out, "Pow") == 2 * LAYERS + 1
