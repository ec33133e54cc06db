"""``fuse-for-ort``: structure, numerics against ONNX Runtime on the original model, and
validity (``verify`` + ``onnx.checker``), on exported zoo models (both exporters), the real
MiniLM, and small hand-built graphs for each pattern variant, positive and negative."""

import numpy as np
import onnx
import onnxruntime as ort
import pass_checks
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import Within, checked_proto, run_ort

import onnxpress
from onnxpress.passes.ort_fusion import FuseForOrt

TOL = 1e-5  # max |fused - original| as a fraction of the output's max |value|
MS = "com.microsoft"


# --------------------------------------------------------------------------- helpers


def fuse(source, **options):
    """Run the pass on a path or proto; check the result; return (proto, PassStats)."""
    model = onnxpress.load(source)
    result = FuseForOrt(**options)(model)
    assert result.model is model
    return checked_proto(model), result


def run(model, feeds):
    return run_ort(model, feeds, optimize=True)


def assert_close(original, fused, feeds, tol=TOL):
    pass_checks.assert_close(run(original, feeds), run(fused, feeds), Within(tol))


def count(proto, op_type, domain=None):
    return sum(1 for n in proto.graph.node
               if n.op_type == op_type and (domain is None or n.domain == domain))


def model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=imports, ir_version=9)


def tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- real models

# (model, exporter) -> expected fusions by the default pass, and LayerNormalizations left
# when skip_layer_norm is on. bert_small's dynamo export is left to test_minilm (the same
# bert.py encoder, real weights), which keeps this file's time in budget.
EXPECTED = {
    ("vit_32", "dynamo"): ({"attention": 6, "gelu": 6, "bias_gelu": 6}, 0),
    ("vit_32", "torchscript"): ({"attention": 6, "gelu": 6, "bias_gelu": 6}, 1),
    # TorchScript's shapes do not prove the mask's [B, S] is the tokens'; see the note.
    ("bert_small", "torchscript"): ({"attention": 0, "gelu": 4, "bias_gelu": 4}, 5),
}


@pytest.fixture(scope="module", params=list(EXPECTED), ids="-".join)
def zoo_export(request, tmp_path_factory):
    from onnxpress.models.zoo import ZOO

    name, exporter = request.param
    path = tmp_path_factory.mktemp("fuse-for-ort") / f"{name}-{exporter}.onnx"
    return request.param, ZOO[name].export(path, exporter=exporter)


def zoo_feeds(name):
    if name == "vit_32":
        return {"pixel_values": rand(2, 3, 32, 32)}
    ids = np.random.default_rng(0).integers(1, 30000, size=(2, 16))
    mask = np.ones((2, 16), np.int64)
    mask[1, 9:] = 0  # padding, so the mask path matters
    return {"input_ids": ids, "attention_mask": mask}


def test_zoo_models(zoo_export):
    (name, exporter), path = zoo_export
    original = onnx.load(path)
    expected, layer_norms_left = EXPECTED[(name, exporter)]
    out, result = fuse(path)
    assert {k: result.stats[k] for k in expected} == expected
    assert count(out, "Erf") == 0
    assert count(out, "Softmax") == count(original, "Softmax") - expected["attention"]
    assert count(out, "Attention", MS) == expected["attention"]
    assert count(out, "LayerNormalization") == count(original, "LayerNormalization")
    assert_close(path, out, zoo_feeds(name))
    if expected["attention"] == 0:
        assert any("mask's [B, S] is not provably" in note for note in result.notes)

    fused_ln, _ = fuse(path, skip_layer_norm=True)
    assert count(fused_ln, "LayerNormalization") == layer_norms_left
    skip_fused = count(original, "LayerNormalization") - layer_norms_left
    assert count(fused_ln, "SkipLayerNormalization", MS) == skip_fused
    assert_close(path, fused_ln, zoo_feeds(name))


def test_minilm(minilm_path):
    from onnxpress.models.minilm import EXAMPLE_SENTENCES, tokenize

    out, result = fuse(minilm_path)
    assert {k: result.stats[k] for k in ("attention", "gelu", "bias_gelu")} == {
        "attention": 6, "gelu": 6, "bias_gelu": 6}
    assert count(out, "Erf") == 0 and count(out, "Softmax") == 0
    assert count(out, "Cast") < count(onnx.load(minilm_path), "Cast")  # mask path removed
    feeds = tokenize(list(EXAMPLE_SENTENCES))  # 3 to ~35 tokens: real padding
    assert_close(minilm_path, out, feeds)

    fused_ln, result = fuse(minilm_path, skip_layer_norm=True)
    assert count(fused_ln, "SkipLayerNormalization", MS) == 12
    assert count(fused_ln, "LayerNormalization") == 1  # the embeddings' LayerNorm:
    assert any("not provably" in note for note in result.notes)  # position slice [1, Min(..)]
    assert_close(minilm_path, fused_ln, tokenize(list(EXAMPLE_SENTENCES), pad_to=48))


# --------------------------------------------------------------------------- GELU


def gelu_nodes(form, divide, swap, root, one=1.0, half=0.5, source="x"):
    consts = [
        helper.make_node("Constant", [], ["root"], value_float=root),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("", 1, [], [one])),
    ]
    scaled = helper.make_node("Div" if divide else "Mul", [source, "root"], ["scaled"])
    add_in = ["one", "erf"] if swap else ["erf", "one"]
    nodes = [*consts, scaled, helper.make_node("Erf", ["scaled"], ["erf"]),
             helper.make_node("Add", add_in, ["plus"])]
    if form == "half_on_erf":  # dynamo: x * (0.5 * (erf + 1))
        nodes += [helper.make_node("Mul", ["half", "plus"], ["t"]),
                  helper.make_node("Mul", ["t", source] if swap else [source, "t"], ["y"])]
    elif form == "half_last":  # TorchScript: (x * (erf + 1)) * 0.5
        nodes += [helper.make_node("Mul", [source, "plus"], ["t"]),
                  helper.make_node("Mul", ["half", "t"] if swap else ["t", "half"], ["y"])]
    else:  # Hugging Face: (x * 0.5) * (1 + erf)
        nodes += [helper.make_node("Mul", [source, "half"], ["t"]),
                  helper.make_node("Mul", ["plus", "t"] if swap else ["t", "plus"], ["y"])]
    return nodes, [init("half", half)]


def gelu_model(form="half_on_erf", divide=True, swap=False, root=None, opset=18, **kw):
    root = root if root is not None else (np.sqrt(2) if divide else np.sqrt(0.5))
    nodes, inits = gelu_nodes(form, divide, swap, float(np.float32(root)), **kw)
    return model(nodes, [tensor("x", [2, 8])], [tensor("y", [2, 8])], inits, opset)


@pytest.mark.parametrize("form", ["half_on_erf", "half_last", "half_on_x"])
@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("swap", [False, True])
def test_gelu_variants(form, divide, swap):
    proto = gelu_model(form, divide, swap)
    out, result = fuse(proto)
    assert [(n.domain, n.op_type) for n in out.graph.node] == [(MS, "Gelu")]
    assert result.stats["gelu"] == 1 and result.notes == []
    assert_close(proto, out, {"x": rand(2, 8) * 3}, tol=1e-6)


def test_gelu_is_onnx_gelu_from_opset_20():
    out, _ = fuse(gelu_model(opset=20))
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("", "Gelu")]
    assert MS not in {o.domain for o in out.opset_import}


@pytest.mark.parametrize(("kw", "reason"), [
    ({"root": 1.5}, "x is scaled by 1.5"),
    ({"root": 1.41421}, "x is scaled by 1.41421"),  # 2.5e-6 off: beyond float rounding
    ({"half": 0.6}, "are not 1 and 0.5"),
    ({"one": 2.0}, "are not 1 and 0.5"),
])
def test_gelu_with_a_wrong_constant_is_kept(kw, reason):
    out, result = fuse(gelu_model(**kw))
    assert count(out, "Erf") == 1 and count(out, "Gelu") == 0
    assert any(reason in note for note in result.notes), result.notes


def test_gelu_whose_intermediate_has_another_user_is_kept():
    proto = gelu_model()
    proto.graph.output.append(tensor("erf", [2, 8]))
    out, result = fuse(proto)
    assert count(out, "Erf") == 1 and result.stats["gelu"] == 0


def bias_gelu_model(x_shape, bias_len=16):
    nodes, inits = gelu_nodes("half_on_erf", True, False, float(np.float32(np.sqrt(2))), source="h")
    weight = init("w", rand(x_shape[-1], bias_len if x_shape[-1] != 1 else 1))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["b", "mm"], ["h"]), *nodes]
    inits += [weight, init("b", rand(bias_len, seed=1))]
    return model(nodes, [tensor("x", ["n", *x_shape[1:]])], [tensor("y", None)], inits)


def test_bias_gelu():
    proto = bias_gelu_model([2, 4, 8])
    out, result = fuse(proto)
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("", "MatMul"), (MS, "BiasGelu")]
    assert result.stats["bias_gelu"] == 1
    assert_close(proto, out, {"x": rand(3, 4, 8)}, tol=1e-6)


def test_bias_add_that_broadcasts_the_input_stays_an_add():
    proto = bias_gelu_model([2, 4, 1])  # [n, 4, 1] + [16] -> [n, 4, 16]
    out, result = fuse(proto)
    assert count(out, "Gelu", MS) == 1 and count(out, "BiasGelu") == 0
    assert any("last dimension of the input is not known to be 16" in n for n in result.notes)
    assert_close(proto, out, {"x": rand(3, 4, 1)}, tol=1e-6)


# --------------------------------------------------------------------------- SkipLayerNorm


def skip_ln_model(a_shape=(2, 4, 8), b_shape=(2, 4, 8), *, bias=False, sum_used=False):
    nodes = []
    first = "a"
    inits = [init("gamma", rand(8, seed=2) + 1), init("beta", rand(8, seed=3))]
    if bias:
        nodes += [helper.make_node("MatMul", ["a", "w"], ["mm"]),
                  helper.make_node("Add", ["mm", "bias"], ["ab"])]
        inits += [init("w", rand(8, 8, seed=4)), init("bias", rand(8, seed=5))]
        first = "ab"
    nodes += [helper.make_node("Add", [first, "b"], ["sum"]),
              helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"],
                               axis=-1, epsilon=1e-6)]
    outputs = [tensor("y", None)]
    if sum_used:
        nodes.append(helper.make_node("Relu", ["sum"], ["r"]))
        outputs.append(tensor("r", None))
    return model(nodes, [tensor("a", list(a_shape)), tensor("b", list(b_shape))], outputs, inits)


def skip_feeds(a_shape=(2, 4, 8), b_shape=(2, 4, 8)):
    return {"a": rand(*a_shape, seed=6), "b": rand(*b_shape, seed=7)}


@pytest.mark.parametrize(("a_shape", "b_shape", "bias", "sum_used"), [
    ((2, 4, 8), (2, 4, 8), False, False),
    ((2, 4, 8), (2, 4, 8), True, False),
    ((2, 4, 8), (2, 4, 8), True, True),
    ((1, 4, 8), (2, 4, 8), False, True),  # the broadcast operand first: swapped into skip
    ((2, 4, 8), (4, 8), False, False),
])
def test_skip_layer_norm(a_shape, b_shape, bias, sum_used):
    proto = skip_ln_model(a_shape, b_shape, bias=bias, sum_used=sum_used)
    out, result = fuse(proto, skip_layer_norm=True)
    (node,) = [n for n in out.graph.node if n.op_type == "SkipLayerNormalization"]
    assert count(out, "LayerNormalization") == 0 and count(out, "Add") == 0
    assert len(node.input) == (5 if bias else 4)
    assert list(node.output)[1:3] in ([], ["", ""])  # no mean / inv_std outputs
    assert (len(node.output) == 4) == sum_used  # the sum comes out only when it is used
    assert result.stats["skip_layer_norm"] == 1
    assert_close(proto, out, skip_feeds(a_shape, b_shape))


@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((2, 4, 8), (2, 1, 8)),  # broadcast over the sequence: ORT's kernel cannot
    ((2, 4, 8), (8,)),
    (("n", 4, 8), ("m", 4, 8)),  # not provably the same batch
])
def test_skip_layer_norm_declines_broadcasts_ort_cannot_run(a_shape, b_shape):
    proto = skip_ln_model(a_shape, b_shape)
    out, result = fuse(proto, skip_layer_norm=True)
    assert count(out, "LayerNormalization") == 1 and count(out, "SkipLayerNormalization") == 0
    assert any("shapes are not provably" in note for note in result.notes), result.notes


def test_skip_layer_norm_is_off_by_default_and_the_add_becomes_a_sum():
    source = skip_ln_model()
    out, result = fuse(source)
    assert count(out, "LayerNormalization") == 1 and count(out, "Add") == 0
    assert count(out, "Sum") == 1 and result.stats["add_as_sum"] == 1
    feeds = {"a": rand(2, 4, 8, seed=5), "b": rand(2, 4, 8, seed=6)}
    # bit-identical to the Add as ONNX defines it (ORT's fused kernel rounds differently)
    expected, got = run_unoptimized(source, feeds), run_unoptimized(out, feeds)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    # ORT's own SkipLayerNormFusion (a slow kernel in 1.31) no longer fires
    optimized = tmp_optimized(out)
    assert count(optimized, "SkipLayerNormalization") == 0
    assert count(tmp_optimized(source), "SkipLayerNormalization") == 1


def test_add_as_sum_can_be_turned_off_and_spares_shared_sums():
    out, result = fuse(skip_ln_model(), add_as_sum=False)
    assert count(out, "Add") == 1 and not result.modified
    out, _ = fuse(skip_ln_model(sum_used=True))
    assert count(out, "Sum") == 0  # another reader: ORT would not fuse it anyway


def run_unoptimized(proto, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def tmp_optimized(proto):
    """The model as ORT's ENABLE_ALL optimizer leaves it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/optimized.onnx"
        options = ort.SessionOptions()
        options.optimized_model_filepath = path
        options.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        return onnx.load(path)


# --------------------------------------------------------------------------- Attention

D, HEADS = 8, 2


def attention_model(*, mask=None, probs_output=False):
    """Separate q/k/v projections, k transposed in one step, scores / sqrt(d) [+ mask]."""
    nodes = []
    inits = [numpy_helper.from_array(np.array([0, 0, HEADS, D // HEADS], np.int64), "shape4"),
             numpy_helper.from_array(np.array([0, 0, D], np.int64), "shape3"),
             init("root_d", np.sqrt(D // HEADS))]
    for seed, role in enumerate("qkv"):
        perm = [0, 2, 3, 1] if role == "k" else [0, 2, 1, 3]
        nodes += [helper.make_node("MatMul", ["x", f"w{role}"], [f"{role}0"]),
                  helper.make_node("Add", [f"{role}0", f"b{role}"], [f"{role}1"]),
                  helper.make_node("Reshape", [f"{role}1", "shape4"], [f"{role}2"]),
                  helper.make_node("Transpose", [f"{role}2"], [role], perm=perm)]
        inits += [init(f"w{role}", rand(D, D, seed=seed) / 2), init(f"b{role}", rand(D, seed=9))]
    nodes += [helper.make_node("MatMul", ["q", "k"], ["qk"]),
              helper.make_node("Div", ["qk", "root_d"], ["scores"])]
    inputs = [tensor("x", ["n", 5, D])]
    if mask is not None:
        inputs.append(tensor("m", ["n", 5], mask))
        nodes += [helper.make_node("Unsqueeze", ["m", "axes"], ["m4"]),
                  helper.make_node("Cast", ["m4"], ["mf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "mf"], ["inv"]),
                  helper.make_node("Mul", ["inv", "fill"], ["bias"]),
                  helper.make_node("Add", ["scores", "bias"], ["masked"])]
        inits += [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
                  init("one", 1.0), init("fill", np.finfo(np.float32).min)]
    nodes += [helper.make_node("Softmax", ["masked" if mask is not None else "scores"],
                               ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "v"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "shape3"], ["y"])]
    outputs = [tensor("y", None)] + ([tensor("probs", None)] if probs_output else [])
    return model(nodes, inputs, outputs, inits)


def attention_feeds(mask_dtype=np.int64):
    mask = np.ones((3, 5), mask_dtype)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    return {"x": rand(3, 5, D, seed=8), "m": mask}


@pytest.mark.parametrize("masked", [False, True])
def test_attention(masked):
    proto = attention_model(mask=TensorProto.INT64 if masked else None)
    out, result = fuse(proto)
    assert result.stats["attention"] == 1 and result.notes == []
    ops = [n.op_type for n in out.graph.node]
    assert ops == (["Cast", "Attention"] if masked else ["Attention"])
    (node,) = [n for n in out.graph.node if n.op_type == "Attention"]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["num_heads"] == HEADS and attributes["scale"] == pytest.approx(0.5)
    assert len(out.graph.initializer) == 2  # the packed weight and bias only
    feeds = attention_feeds()
    assert_close(proto, out, feeds if masked else {"x": feeds["x"]})
    assert not fuse(out)[1].modified  # a second run finds nothing to do


def test_attention_whose_weights_are_a_graph_output_is_kept():
    out, result = fuse(attention_model(probs_output=True))
    assert count(out, "Softmax") == 1 and result.stats["attention"] == 0
    assert any("user outside the attention block" in note for note in result.notes)


def test_attention_with_a_float_mask_becomes_an_attention_bias():
    """1 - m is not a 0/1 choice for m = 0.5, so it cannot be ORT's mask_index; added as it
    is (attention_bias), it is exact. Where QAttention follows, it is kept unfused."""
    proto = attention_model(mask=TensorProto.FLOAT)
    out, result = fuse(proto)
    assert count(out, "Softmax") == 0 and result.stats["attention"] == 1
    (node,) = [n for n in out.graph.node if n.op_type == "Attention"]
    assert len(node.input) == 6 and node.input[3] == ""
    assert_close(proto, out, attention_feeds(np.float32))

    out, result = fuse(proto, attention_bias=False)
    assert count(out, "Softmax") == 1 and result.stats["attention"] == 0
    assert any("attention_bias, which QAttention lacks" in note for note in result.notes)


def packed_attention_model(layout):
    """One qkv projection reshaped to [B, S, 3, H, d] (timm) or [B, S, H, 3, d], unbound with
    Gather; q scaled before q @ k^T."""
    split = [3, HEADS, D // HEADS] if layout == "3hd" else [HEADS, 3, D // HEADS]
    perm = [2, 0, 3, 1, 4] if layout == "3hd" else [3, 0, 2, 1, 4]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p0"]),
             helper.make_node("Add", ["p0", "b"], ["p"]),
             helper.make_node("Reshape", ["p", "shape5"], ["p5"]),
             helper.make_node("Transpose", ["p5"], ["t"], perm=perm)]
    for index, role in enumerate("qkv"):
        nodes.append(helper.make_node("Constant", [], [f"i{index}"], value_int=index))
        nodes.append(helper.make_node("Gather", ["t", f"i{index}"], [role], axis=0))
    nodes += [helper.make_node("Mul", ["q", "scale"], ["qs"]),
              helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qs", "kt"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "v"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "shape3"], ["y"])]
    inits = [init("w", rand(D, 3 * D, seed=10) / 2), init("b", rand(3 * D, seed=11)),
             init("scale", 0.5),
             numpy_helper.from_array(np.array([0, 0, *split], np.int64), "shape5"),
             numpy_helper.from_array(np.array([0, 0, D], np.int64), "shape3")]
    return model(nodes, [tensor("x", ["n", 5, D])], [tensor("y", None)], inits)


@pytest.mark.parametrize("layout", ["3hd", "h3d"])
def test_packed_attention(layout):
    proto = packed_attention_model(layout)
    out, result = fuse(proto)
    assert [n.op_type for n in out.graph.node] == ["Attention"] and result.notes == []
    assert_close(proto, out, {"x": rand(3, 5, D, seed=12)})
