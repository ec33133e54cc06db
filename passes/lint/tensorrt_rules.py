"""What TensorRT's ONNX parser and its explicit-quantization mode accept, as checks that
name each violation (rule, element, what to do).

Sources: onnx-tensorrt's operator matrix (TensorRT 10: opsets 9-20 in 10.0, to 24 in 10.15;
the ops marked unsupported below) and TensorRT's explicit-quantization rules: int8 Q/DQ
pairs, symmetric (zero point 0), constant scales, activations per tensor, weights of Conv,
MatMul and Gemm per channel on the output-channel axis; integer operators (QLinearConv,
MatMulInteger, ...) and contrib-domain ops do not parse. A weighted op with Q/DQ on only
one of its input and weight runs in float, so that is flagged too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array, is_constant, opset_version
from onnxpress.ir.edit import describe
from onnxpress.ir.layers import linear_layer

OPSETS = (9, 20)  # TensorRT 10.0; later 10.x parse up to 24
UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
    "Unique",
})
#: inputs TensorRT needs as build-time constants, by op
CONSTANT_INPUTS = {"Squeeze": 1, "Unsqueeze": 1, "ReduceSum": 1, "ReduceMean": 1,
                   "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceL1": 1,
                   "ReduceL2": 1, "ReduceLogSum": 1, "ReduceLogSumExp": 1,
                   "ReduceSumSquare": 1, "QuantizeLinear": 1, "DequantizeLinear": 1}
QUANTIZED = (ir.DataType.INT8, ir.DataType.INT4, ir.DataType.FLOAT8E4M3FN)
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str  # e.g. "asymmetric-quantization"
    element: str  # the node or input it concerns
    detail: str  # what is wrong and what to do

    def line(self) -> str:
        return f"{self.rule}: {self.element}: {self.detail}"


def _weight_axis(node: ir.Node) -> int | None:
    """The output-channel axis of ``node``'s weight (input 1), or None for other ops."""
    layer = linear_layer(node) if node.op_type != "Attention" else None
    return layer.out_axis if layer is not None else None


def _dq_of(value: ir.Value | None) -> ir.Node | None:
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.domain == "":
        return producer
    return None


def _is_weight(dq: ir.Node) -> bool:
    """A DQ of a constant, or of a Q of a constant (an unfolded weight)."""
    source = dq.inputs[0]
    q = source.producer() if source is not None else None
    return is_constant(source) or (q is not None and q.op_type == "QuantizeLinear"
                                   and is_constant(q.inputs[0]))


def check_qdq(node: ir.Node) -> list[Violation]:
    """Type, symmetry, constant scales and activation granularity of one Q or DQ."""
    found, name = [], describe(node)
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    quantized = node.outputs[0] if node.op_type == "QuantizeLinear" else node.inputs[0]
    dtype = zero.dtype if zero is not None else (quantized.dtype if quantized else None)
    if node.op_type == "QuantizeLinear" and zero is None:
        dtype = ir.DataType.UINT8  # the spec's default output type
    if dtype is not None and dtype not in QUANTIZED:
        what = "an int32 bias" if dtype == ir.DataType.INT32 else dtype.name.lower()
        found.append(Violation("quantized-type", name, f"quantizes to {what}; TensorRT takes "
                               "int8 Q/DQ pairs (a float bias): quantize with activations=int8"))
    zeros = constant_array(zero) if zero is not None else None
    if zeros is not None and np.any(zeros != 0):
        kind = "weight" if node.op_type == "DequantizeLinear" and _is_weight(node) else "activation"
        found.append(Violation("asymmetric-quantization", name, f"{kind} zero point "
                               f"{zeros.reshape(-1)[0]} is not 0; TensorRT quantizes "
                               "symmetrically: quantize(activations=int8, symmetric)"))
    if scale is not None and not is_constant(scale):
        found.append(Violation("non-constant-input", name, "the scale is computed at run time; "
                               "TensorRT needs constant scales (calibrate statically)"))
    scales = constant_array(scale)
    activation = not (node.op_type == "DequantizeLinear" and _is_weight(node)) and not (
        node.op_type == "QuantizeLinear" and is_constant(node.inputs[0]))
    if activation and scales is not None and scales.size > 1:
        found.append(Violation("per-channel-activation", name, f"{scales.size} scales on an "
                               "activation; TensorRT quantizes activations per tensor"))
    return found


def check_weighted(node: ir.Node) -> list[Violation]:
    """Q/DQ placement and weight granularity of a Conv, MatMul or Gemm."""
    axis = _weight_axis(node)
    if axis is None or len(node.inputs) < 2:
        return []
    data, weight = _dq_of(node.inputs[0]), _dq_of(node.inputs[1])
    name = describe(node)
    if (data is None) != (weight is None):
        has, lacks = ("input", "weight") if weight is None else ("weight", "input")
        return [Violation("half-quantized", name, f"Q/DQ on its {has} but not its {lacks}: "
                          "TensorRT runs it in float; quantize both or neither")]
    if weight is None or not _is_weight(weight):
        return []
    shape = node.inputs[1].shape or weight.inputs[0].shape  # DQ outputs may lack one
    rank = len(shape) if shape is not None else 0
    channels = shape[axis] if shape is not None and rank else None
    scale_axis = weight.attributes.get("axis")
    stored = scale_axis.as_int() if scale_axis is not None else 1
    scales = constant_array(weight.inputs[1])
    if scales is not None and scales.size == 1:
        if isinstance(channels, int) and channels > 1:
            return [Violation("per-tensor-weight", name, f"one scale for {channels} output "
                              "channels; TensorRT wants per-channel weight scales: "
                              "quantize(per_channel=true)")]
        return []
    if rank and stored % rank != axis % rank:
        return [Violation("weight-channel-axis", name, f"weight scales on axis {stored}; "
                          f"the output channels are axis {axis % rank}")]
    return []


def check_pairs(node: ir.Node) -> list[Violation]:
    """Q must feed only DQs (explicit quantization is Q/DQ pairs)."""
    if node.op_type != "QuantizeLinear":
        return []
    out = node.outputs[0]
    lone = out.is_graph_output() or any(user.op_type != "DequantizeLinear"
                                        for user, _ in out.uses())
    if not lone:
        return []
    return [Violation("unpaired-quantize", describe(node), "feeds something other than a "
                      "DequantizeLinear; TensorRT reads quantization only as Q/DQ pairs")]


def check_op(node: ir.Node) -> list[Violation]:
    name = describe(node)
    if node.domain not in ("", "ai.onnx"):
        return [Violation("unsupported-op", name, f"domain {node.domain!r} does not parse in "
                          "TensorRT (no plugin): use the tensorrt target's pipeline, not "
                          "fuse-for-ort or lower-qdq")]
    if node.op_type in UNSUPPORTED:
        return [Violation("unsupported-op", name, "TensorRT's ONNX parser has no "
                          f"{node.op_type}; keep the graph in Q/DQ form (no lower-qdq)")]
    found = []
    reduction = node.attributes.get("reduction")
    if node.op_type == "ScatterND" and reduction is not None and reduction.as_string() != "none":
        found.append(Violation("unsupported-op", name, "ScatterND reduction "
                               f"{reduction.as_string()!r}; TensorRT only overwrites"))
    sort = node.attributes.get("sorted")
    if node.op_type == "TopK" and sort is not None and not sort.as_int():
        found.append(Violation("unsupported-op", name, "TopK with sorted=0; TensorRT sorts"))
    index = CONSTANT_INPUTS.get(node.op_type)
    if (index is not None and node.op_type not in _QDQ and len(node.inputs) > index
            and node.inputs[index] is not None and not is_constant(node.inputs[index])):
        found.append(Violation("non-constant-input", name, f"input {index} must be a "
                               "build-time constant in TensorRT; run cleanup to fold it"))
    return found


def check_model(model: ir.Model, *, dynamic: bool) -> list[Violation]:
    found = []
    opset = opset_version(model)
    if opset is not None and not OPSETS[0] <= opset <= OPSETS[1]:
        found.append(Violation("opset", "model", f"opset {opset}; TensorRT 10.0 parses "
                               f"{OPSETS[0]}-{OPSETS[1]}: compile with --opset {OPSETS[1]}"))
    if not dynamic:
        for value in model.graph.inputs:
            dims = list(value.shape.dims) if value.shape is not None else None
            if dims is None or any(not isinstance(d, int) for d in dims):
                found.append(Violation("dynamic-shape", f"input {value.name!r}", f"shape "
                                       f"{dims}; give static shapes (static-shapes(...)) or "
                                       "build with an optimization profile "
                                       "(lint-tensorrt(dynamic=true))"))
    for node in model.graph.all_nodes():
        found += check_op(node)
        if node.op_type in _QDQ and node.domain == "":
            found += check_qdq(node) + check_pairs(node)
        found += check_weighted(node)
    return found
