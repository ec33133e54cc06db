"""The one view of a linear layer: which input is the weight, which of its axes are the
output channels and the input features, its groups, where its bias lives, and the constant
behind the weight (directly, or through a Transpose of one).

Every pass family reads layers through :func:`linear_layer`; nothing else in the library
works out ``transB`` or a ConvTranspose's channel axis. The ``[outputs, features]`` matrix
view that prune's refit and lowrank's factoring work in lives here too.

Layouts, as the node reads its weight (input 1):

- Conv ``[O, C/g, k...]``: outputs axis 0, features axis 1, ``group`` g;
- ConvTranspose ``[C, O/g, k...]``: outputs axis 1, features axis 0;
- Gemm ``[K, N]``, or ``[N, K]`` with ``transB=1``;
- MatMul ``[..., K, N]``: outputs the last axis, features the one before;
- com.microsoft Attention: the packed ``[hidden, 3 * hidden]`` Q/K/V weight, outputs axis 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array, is_constant
from onnxpress.ir.edit import MS_DOMAIN, STANDARD_DOMAINS

LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention"})


@dataclasses.dataclass(frozen=True)
class Layer:
    """A linear layer. Axes are of the weight as the node reads it, non-negative where the
    weight's rank is known (a MatMul's are ``-1``/``-2`` otherwise)."""

    node: ir.Node
    out_axis: int
    in_axis: int
    groups: int = 1
    trans_a: bool = False  # Gemm: the activation is read transposed

    @property
    def weight(self) -> ir.Value | None:
        return self.node.inputs[1] if len(self.node.inputs) > 1 else None

    def weight_array(self) -> np.ndarray | None:
        return constant_array(self.weight)

    @property
    def feature_axis(self) -> int:
        """The axis of the activation input that the weight's features contract."""
        if self.node.op_type in ("Conv", "ConvTranspose"):
            return 1
        return 0 if self.trans_a else -1

    def outputs(self, weight: np.ndarray) -> int:
        """Output channels (Conv: all groups together)."""
        if self.node.op_type == "ConvTranspose":
            return weight.shape[1] * self.groups
        return weight.shape[self.out_axis]

    def transposes(self) -> dict[str, int]:
        """The Gemm's ``transA``/``transB`` as attributes, for a node that replaces it."""
        return {"transA": int(self.trans_a), "transB": int(self.out_axis == 0)}


def linear_layer(node: ir.Node) -> Layer | None:
    """The layer view of ``node``; None for an op that is not a linear layer."""
    op = node.op_type
    if node.domain == MS_DOMAIN:
        return Layer(node, 1, 0) if op == "Attention" else None
    if node.domain not in STANDARD_DOMAINS or op not in LINEAR_OPS:
        return None
    groups = node.attributes.get_int("group", 1)
    if op == "Conv":
        return Layer(node, 0, 1, groups)
    if op == "ConvTranspose":
        return Layer(node, 1, 0, groups)
    if op == "Gemm":
        trans_b = node.attributes.get_int("transB", 0)
        return Layer(node, 0 if trans_b else 1, 1 if trans_b else 0,
                     trans_a=bool(node.attributes.get_int("transA", 0)))
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    rank = len(weight.shape) if weight is not None and weight.shape is not None else None
    if rank is not None and rank >= 2:
        return Layer(node, rank - 1, rank - 2)
    return Layer(node, -1, -2)


def drop_transposes(node: ir.Node) -> None:
    """Make a Gemm read both operands as stored (its caller rewrote them to match)."""
    node.attributes.pop("transA", None)
    node.attributes.pop("transB", None)


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """The constant a weight input comes from: ``value`` itself, or the input of the
    Transpose ``via`` (``perm``: the weight's axis i is the constant's axis ``perm[i]``);
    ``tensor`` holds it (shape and dtype known without reading its bytes)."""

    value: ir.Value
    tensor: ir.TensorProtocol
    via: ir.Node | None
    perm: tuple[int, ...]

    def axis(self, weight_axis: int) -> int:
        """The constant's axis that the weight's ``weight_axis`` reads."""
        return self.perm[weight_axis]


def weight_source(value: ir.Value | None) -> WeightSource | None:
    """The constant behind ``value`` (directly, or through one standard Transpose of a
    constant); None when it is computed from data. Reads no bytes."""
    if (tensor := constant_tensor(value)) is not None:
        assert value is not None
        return WeightSource(value, tensor, None, tuple(range(len(tensor.shape))))
    via = value.producer() if value is not None else None
    if via is None or via.op_type != "Transpose" or via.domain not in STANDARD_DOMAINS:
        return None
    source = via.inputs[0]
    if (tensor := constant_tensor(source)) is None:
        return None
    assert source is not None
    rank = len(tensor.shape)
    perm = tuple(via.attributes.get_ints("perm", list(range(rank - 1, -1, -1))))
    return WeightSource(source, tensor, via, perm)


def constant_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of a constant value, or None (reads no bytes)."""
    if not is_constant(value):
        return None
    return ir.convenience.get_const_tensor(value)  # type: ignore[arg-type]


def layer_bias(node: ir.Node) -> tuple[ir.Node, int] | None:
    """(node, input index) of the layer's constant bias vector: a Conv's, ConvTranspose's,
    Gemm's or Attention's input 2, or the vector that a MatMul's sole reader (an Add)
    adds, when nothing else reads it."""
    if node.op_type in ("Conv", "ConvTranspose", "Gemm", "Attention"):
        return (node, 2) if len(node.inputs) > 2 and _vector(node.inputs[2]) else None
    uses = list(node.outputs[0].uses())
    if len(uses) == 1 and uses[0].node.op_type == "Add":
        add, other = uses[0].node, 1 - uses[0].idx
        if _vector(add.inputs[other]) and len(list(add.inputs[other].uses())) == 1:
            return add, other
    return None


def _vector(value: ir.Value | None) -> bool:
    array = constant_array(value)
    return array is not None and array.ndim == 1


# The [outputs, features] matrix view: prune's refit and lowrank's factoring work in it.

def features_of(node: ir.Node, x: np.ndarray) -> np.ndarray:
    """The layer's input ``x`` as feature rows: a Conv's unfolded patches (input channel x
    kernel position, the order of ``weight.reshape(O, -1)``), else its last axis."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1])
    weight = constant_array(node.inputs[1])
    assert weight is not None
    kernel = weight.shape[2:]
    attrs = node.attributes
    strides = attrs.get_ints("strides", [1] * len(kernel))
    dilations = attrs.get_ints("dilations", [1] * len(kernel))
    pads = attrs.get_ints("pads", [0] * 2 * len(kernel))
    spatial = len(kernel)
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    padded = np.pad(x, widths)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=tuple(
        range(2, 2 + spatial)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations)
    windows = windows[index]  # [N, C, out..., k...]
    order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    return windows.transpose(order).reshape(-1, int(np.prod(weight.shape[1:])))


def _view(node: ir.Node) -> Layer:
    layer = linear_layer(node)
    assert layer is not None, f"{node.op_type} is not a linear layer"
    return layer


def outputs_of(node: ir.Node, weight: np.ndarray) -> int:
    return _view(node).outputs(weight)


def in_channels(node: ir.Node, weight: np.ndarray) -> int:
    return weight.size // outputs_of(node, weight) // (
        int(np.prod(weight.shape[2:])) if node.op_type == "Conv" else 1)


def as_matrix(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    return weight if _view(node).out_axis == 0 else weight.T


def from_matrix(node: ir.Node, weight: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return matrix.reshape(weight.shape)
    return matrix if _view(node).out_axis == 0 else matrix.T


def table_lookups(table: ir.Value, graph: ir.Graph) -> list[ir.Node]:
    """The embedding lookups of ``table`` in ``graph``: Gathers of whole rows (axis 0) with
    indices of known rank, which a rewrite can give the rows' shape."""
    return [user for user, index in table.uses()
            if user.op_type == "Gather" and user.domain in STANDARD_DOMAINS and index == 0
            and user.attributes.get_int("axis", 0) == 0 and user.graph is graph
            and user.inputs[1] is not None and user.inputs[1].shape is not None]
