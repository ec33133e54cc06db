"""``weight-only`` on language models: a tied embedding / LM head stored once (MatMulNBits
plus a lookup of its packed rows), the clip search, and the activation-aware scaling.

References: the pass's own ``Blocked.dequantize()`` (what MatMulNBits computes, checked
against a numpy definition in test_weight_only.py), numpy forward passes, and ONNX Runtime
on the float model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.passes.quantize.weight_only import blockwise, search
from onnxpress.passes.quantize.weight_only.weight_only import WeightOnly

VOCAB, HIDDEN = 96, 80  # HIDDEN not a multiple of 32 or 64: a padded last block


def tied_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """ids -> Gather(table) -> Relu -> MatMul(Transpose(table)): a tied embedding and head."""
    table = np.random.default_rng(0).standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0, name="embed"),
             helper.make_node("Relu", ["emb"], ["hidden"]),
             helper.make_node("Transpose", ["table"], ["head_w"], perm=[1, 0]),
             helper.make_node("MatMul", ["hidden", "head_w"], ["logits"], name="head")]
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", VOCAB]),
         helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["b", "s", HIDDEN])],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return model, table


@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, True), (4, 64, False),
                                                  (8, 32, True), (4, 0, True)])
def test_a_tied_table_is_stored_once_and_looked_up_exactly(bits, block, symmetric):
    model, table = tied_model()
    pass_ = WeightOnly(bits=bits, block_size=block, symmetric=symmetric, format="matmulnbits",
                       min_elements=0, method="rtn", head_bits=0, accuracy_level=0)
    out = onnxpress.to_proto(onnxpress.compile(model, [pass_]))
    onnx.checker.check_model(out, full_check=True)
    big = [i for i in out.graph.initializer if np.prod(i.dims) >= VOCAB * HIDDEN // 8]
    assert [i.data_type for i in big] == [TensorProto.UINT8], "one packed table, no float copy"
    assert [n.op_type for n in out.graph.node].count("MatMulNBits") == 1

    size = block or 128  # per channel: one block of the next power of two >= K
    blocked = blockwise.round_to_nearest(table, bits=bits, block_size=block or HIDDEN,
                                         symmetric=symmetric, signed_scale=True)
    restored = blocked.dequantize()
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, 7))
    got = Runner(out.SerializeToString(), optimize=True).run({"ids": ids})
    assert np.array_equal(got["emb"], restored[ids]), "rows equal what MatMulNBits computes"
    expected = np.maximum(restored[ids], 0) @ restored.T
    np.testing.assert_allclose(got["logits"], expected, rtol=1e-5, atol=1e-4)
    assert size  # the block the operator uses is checked by the exact rows above


def test_the_output_layer_and_a_tied_table_keep_8_bits_by_default():
    model, _ = tied_model()
    out, report = onnxpress.compile(model, "weight-only(format=matmulnbits,min_elements=0)",
                                    return_report=True)
    proto = onnxpress.to_proto(out)
    nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    assert [a.i for n in nbits for a in n.attribute if a.name == "bits"] == [8]
    assert any(note.startswith("8-bit (the output layer") and "table" in note
               for note in report.passes[-1].notes)
    four = onnxpress.to_proto(onnxpress.compile(
        model, "weight-only(format=matmulnbits,min_elements=0,head_bits=4)"))
    sizes = [sum(i.ByteSize() for i in m.graph.initializer) for m in (proto, four)]
    assert sizes[1] < 0.7 * sizes[0]  # half the levels' bytes; scales and zero points stay


def test_the_dq_format_leaves_a_tied_table_float_and_says_why_not_shared():
    model, table = tied_model()
    out = onnxpress.to_proto(onnxpress.compile(model, [WeightOnly(min_elements=0)]))
    kinds = sorted(i.data_type for i in out.graph.initializer
                   if np.prod(i.dims) >= VOCAB * HIDDEN // 8)
    assert TensorProto.FLOAT in kinds  # the Gather still reads the float table
    ids = np.array([[1, 2, 3]])
    got = Runner(out.SerializeToString()).run({"ids": ids})
    assert np.array_equal(got["emb"], table[ids])


def test_clip_search_never_loses_to_rounding_to_nearest():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((48, 200)).astype(np.float32)
    w[:, 7] *= 20  # an outlier feature
    importance = rng.random(200).astype(np.float32) + 0.1
    grid = dict(bits=4, block_size=32, symmetric=False)

    def weighted_error(blocked: blockwise.Blocked) -> np.ndarray:
        return (np.square(w - blocked.dequantize()) * importance).sum(axis=1)

    rtn = blockwise.round_to_nearest(w, **grid)
    clipped = search.clip_search(w, importance=importance, **grid)
    assert (weighted_error(clipped) <= weighted_error(rtn) + 1e-6).all()
    assert weighted_error(clipped).sum() < 0.97 * weighted_error(rtn).sum()
    one = search.clip_search(w, importance=importance, grid=1, **grid)
    assert np.array_equal(one.dequantize(), rtn.dequantize())


def gain_model(gain: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> [Mul(gain)] -> MatMul(w1), MatMul(w2) -> Add -> MatMul(w3): two weights reading
    one activation (AWQ's group), and one reading an activation with no gain before it."""
    rng = np.random.default_rng(3)
    k = 128
    arrays = {"w1": rng.standard_normal((k, 64)), "w2": rng.standard_normal((k, 64)),
              "w3": rng.standard_normal((64, 96)), "g": rng.random(k) + 0.5}
    arrays = {n: a.astype(np.float32) for n, a in arrays.items()}
    nodes = [helper.make_node("Mul", ["x", "g"], ["h"], name="norm")] if gain else []
    h = "h" if gain else "x"
    nodes += [helper.make_node("MatMul", [h, "w1"], ["a"], name="m1"),
              helper.make_node("MatMul", [h, "w2"], ["b"], name="m2"),
              helper.make_node("Add", ["a", "b"], ["c"]),
              helper.make_node("MatMul", ["c", "w3"], ["y"], name="m3")]
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items() if gain or n != "g"]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 96])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=10), arrays


def activations(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    x[:, :6] *= 30  # a few features with large activations: what AWQ protects
    return x


@pytest.mark.parametrize("gain", [True, False])
def test_awq_scales_the_activation_and_beats_rounding_to_nearest(gain, tmp_path):
    model, arrays = gain_model(gain)
    np.savez(tmp_path / "cal.npz", x=activations(256, 4))
    x = activations(64, 5)
    fp32 = Runner(model.SerializeToString(), optimize=False).run({"x": x})["y"]
    errors = {}
    for method in ("rtn", "awq", "awq-gptq"):
        out, report = onnxpress.compile(
            model, f"weight-only(block_size=32,format=matmulnbits,min_elements=0,method={method})",
            calibration=onnxpress.CalibrationData(tmp_path / "cal.npz", batch_size=64),
            return_report=True)
        proto = onnxpress.to_proto(out)
        onnx.checker.check_model(proto, full_check=True)
        y = Runner(proto.SerializeToString(), optimize=False).run({"x": x})["y"]
        errors[method] = float(np.sqrt(np.mean(np.square(y - fp32))))
        if method != "rtn":
            notes = " ".join(report.passes[-1].notes)
            readers_of_x = [n for n in proto.graph.node if "x" in n.input]
            assert "awq: activations scaled" in notes
            assert [n.op_type for n in readers_of_x] == ["Mul"]
            scale = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}[
                readers_of_x[0].input[1]]
            if gain:  # folded into the gain: the same node, a new gain
                assert readers_of_x[0].name == "norm" and "folded into the gain" in notes
                assert not np.allclose(scale, arrays["g"])
            else:
                assert "one Mul" in notes
    assert errors["awq"] < 0.85 * errors["rtn"], errors
    assert errors["awq-gptq"] < errors["rtn"], errors


def test_awq_and_gptq_need_data():
    model, _ = gain_model(True)
    for method in ("awq", "gptq", "awq-gptq"):
        with pytest.raises(onnxpress.BadInputError, match="needs calibration data"):
            onnxpress.compile(model, f"weight-only(method={method})")
