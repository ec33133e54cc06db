"""The layers ``lowrank`` may factor: MatMul / Gemm with a constant 2-D float weight, and
Conv with a constant float weight and ``group=1``, each with the statistics of its input
when the pass has calibration data.

The statistics are one :class:`Moments` per distinct input (a transformer's Q, K and V, or
its gate and up projections, read one value and share it; a Conv's patches are its own),
accumulated in float32 in one streaming run, upper triangles only: SmolLM2-135M's 210
layers read 120 inputs whose ``H`` take 200 MB so (six times that when each layer kept its
own full float64 copy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.channel_groups import channel_groups
from onnxpress.ir.edit import describe
from onnxpress.ir.layers import as_matrix, features_of

#: features above which a layer's ``H`` (features^2 float64) is not gathered
MAX_FEATURES = 8192


class Moments:
    """``sum x x^T`` over the feature rows of one layer input, and the row count: fed each
    calibration batch (float32 products, as the runtime computes the layer). Symmetric, so
    only its upper triangle is kept (``gram()`` unpacks it): half the memory."""

    def __init__(self, node: ir.Node) -> None:
        self.node = node  # a reader: how the input becomes feature rows
        self.packed: np.ndarray | None = None  # the upper triangle, row by row
        self.width = 0
        self.count = 0

    def __call__(self, x: np.ndarray) -> None:
        rows = features_of(self.node, np.asarray(x, np.float32))
        self.width = rows.shape[1]
        term = (rows.T @ rows)[np.triu_indices(self.width)]
        self.packed = term if self.packed is None else self.packed + term
        self.count += len(rows)

    def gram(self) -> np.ndarray | None:
        """``sum x x^T`` (float64), None before any batch."""
        if self.packed is None:
            return None
        full = np.zeros((self.width, self.width))
        full[np.triu_indices(self.width)] = self.packed
        return full + np.triu(full, 1).T


def share(found: list[Site]) -> dict[str, list[Moments]]:
    """One :class:`Moments` per distinct input of ``found`` (set on each site), by the
    input's name: what a streaming run feeds."""
    shared: dict[tuple[str, int], Moments] = {}
    for site in found:
        name = site.node.inputs[0].name
        key = (name, id(site.node) if site.node.op_type == "Conv" else 0)
        if key not in shared:
            shared[key] = Moments(site.node)
        site.moments = shared[key]
    sinks: dict[str, list[Moments]] = {}
    for (name, _), moments in shared.items():
        sinks.setdefault(name, []).append(moments)
    return sinks


@dataclasses.dataclass(eq=False)  # one per layer: hashed by identity
class Site:
    """A factorable layer. Its weight is read from the graph when asked for, not held: a
    copy of every weight would double an LLM's memory for the whole pass (SmolLM2: 400 MB,
    its whitened compile peaked at 2.35 GB)."""

    node: ir.Node
    value: ir.Value  # the weight as the layer reads it (kept: a pass may replace the input)
    dims: tuple[int, ...]
    dtype: np.dtype
    moments: Moments | None = None  # its input's statistics, shared with its other readers

    @property
    def weight(self) -> np.ndarray:
        """The weight as stored (read anew: drop it after use)."""
        weight = constant_array(self.value)
        assert weight is not None
        return weight

    @property
    def stored(self) -> tuple[tuple[int, ...], np.dtype]:
        return self.dims, self.dtype

    @property
    def matrix(self) -> np.ndarray:
        """The weight as ``[outputs, features]``, float64."""
        return np.asarray(as_matrix(self.node, self.weight), np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        # a zero-stride stand-in: the layout without reading the bytes
        outputs, features = as_matrix(self.node, np.broadcast_to(self.dtype.type(0),
                                                                 self.dims)).shape
        return outputs, features

    @property
    def label(self) -> str:
        return f"{self.node.op_type} {self.node.name!r}"

    def statistics(self) -> np.ndarray | None:
        """``E[x x^T]`` of the layer's input features (float64), when measured."""
        moments = self.moments
        gram = None if moments is None or not moments.count else moments.gram()
        return None if gram is None else gram / moments.count


def find(graph: ir.Graph, ops: set[str], exclude: set[str], mlp_only: bool,
         min_elements: int) -> tuple[list[Site], list[str]]:
    """The factorable layers in graph order, and a note for each weight layer left out."""
    allowed = _mlp_layers(graph) if mlp_only else None
    sites, notes = [], []
    for node in graph:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        weight = constant_array(node.inputs[1])
        label = describe(node)
        if weight is None and (node.op_type != "MatMul" or node.inputs[1].is_initializer()):
            notes.append(f"{label} kept: its weight is not a constant (a graph input, or "
                         "computed)")
            continue
        if weight is None or constant_array(node.inputs[0]) is not None:
            continue  # not a weight layer (attention's MatMuls), or constant-folded away
        reason = _unsupported(node, weight)
        if allowed is not None and node not in allowed:
            continue
        if node.name in exclude:
            reason = "excluded"
        elif reason is None and weight.size < min_elements:
            reason = f"{weight.size} weights, fewer than min_elements={min_elements}"
        if reason:
            notes.append(f"{label} kept: {reason}")
        else:
            sites.append(Site(node, node.inputs[1], weight.shape, weight.dtype))
    return sites, notes


def _unsupported(node: ir.Node, weight: np.ndarray) -> str | None:
    if weight.dtype != np.float32:
        return f"weight is {weight.dtype}, not float32"
    if node.op_type == "Conv":
        if node.attributes.get_int("group", 1) != 1:
            return "grouped Conv"
        return None if weight.ndim >= 3 else "Conv weight is not [O, C, k...]"
    if weight.ndim != 2:
        return f"weight has {weight.ndim} dimensions, not 2"
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return "Gemm with transA=1"
    return None


def _mlp_layers(graph: ir.Graph) -> set[ir.Node]:
    """The layers writing or reading a transformer MLP's hidden width: the producers and
    consumers of the prunable Gemm/MatMul channel groups."""
    return {item.node for group in channel_groups(graph)
            if group.kind == "linear" and not group.blocked
            for item in group.slices if item.role in ("producer", "consumer")}
