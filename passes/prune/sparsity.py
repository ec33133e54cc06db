"""Weight sparsity for ``prune``: zero weights of Conv, MatMul and Gemm, unstructured or N:M.

    Conv(X, W)  ->  Conv(X, W * mask)        (MatMul's constant B and Gemm's B alike)

The graph keeps its nodes and shapes; only weight values change (a new tensor under the same
initializer name), so a runtime sees the zeros and a file can store them as sparse
initializers (``backends.sparse_initializers``).

The reduction (input-feature) axis of a weight, as the node reads it, is the layer view's
(:mod:`onnxpress.ir.layers`): Conv ``[O, C/g, kh, kw]`` axis 1, MatMul ``B [..., K, N]`` axis
-2, Gemm ``B`` axis 0 (``[K, N]``) or 1 when read transposed. A weight read through a
Transpose of a constant (what the PyTorch exporter writes for ``nn.Linear``) is the constant,
axes mapped through the perm.

- ``structure="unstructured"``: each layer gets ``round(sparsity * size)`` of its weights
  zeroed (half rounds up), smallest scores first, ties to the lower flat index.
- ``structure="nm"``: in every group of ``m`` consecutive weights along the reduction axis
  (at each output channel and kernel position) the ``m - n`` smallest scores are zeroed, so
  at most ``n`` stay: TensorRT's 2:4 layout for its sparse kernels (Conv: groups of input
  channels at each ``(o, kh, kw)``; MatMul/Gemm: groups along K; NVIDIA apex ASP masks the
  same way). A layer whose reduction axis is not a multiple of ``m`` stays dense, with a note.

Importance: ``magnitude`` scores ``|W|``; ``activation`` scores ``|W| * ||X_j||`` as in Wanda
(Sun et al. 2023), ``||X_j||`` the L2 norm of input feature ``j`` of the layer's input over
the calibration data (Conv: input channel, over batch and positions; MatMul/Gemm: the last
axis, over all others), gathered in one run of the model. Unstructured + activation ranks
within each output channel, as Wanda does; magnitude ranks over the whole layer. With
``activation``, ``stats["estimated_error"]`` holds each layer's estimated relative output
error (the share of ``sum (W_ij ||X_j||)^2`` zeroed: the diagonal terms of its output energy
on the calibration data), and a note names layers above ``ERROR_WARNING``. Only one
layer's scores are held at a time (``allocate=adaptive`` needs them all).
SmolLM2-135M (perplexity 42.09): Wanda 42.07 / 42.06 / 43.47 / 46.71 at 5 / 10 / 20 / 30%,
magnitude 42.11 / 40.27 / 42.44 / 60.51 (``benchmarks/suites/llm_compress.py``).

Lossy by design; deterministic given the options and data. A weight read by several layers
is sparsified once (activation norms pooled over its readers' inputs); one also read by
other nodes, not a float constant, or read along different axes is left dense with a note.
Only the main graph is changed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.layers import linear_layer, weight_source
from onnxpress.passes.activations import stream

__all__ = ["IMPORTANCES", "STRUCTURES", "sparsify"]

logger = logging.getLogger(__name__)

STRUCTURES = ("unstructured", "nm")
IMPORTANCES = ("magnitude", "activation")
_OPS = ("Conv", "MatMul", "Gemm")
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A node reading the constant ``source`` (through ``via``, a Transpose, if not None) as
    ``source.transpose(perm)``, whose axis ``view_in`` is the reduction axis and ``view_out``
    the output channel; ``feature``: the node's input and its axis of input features."""

    node: ir.Node
    source: ir.Value
    tensor: ir.TensorProtocol
    via: ir.Node | None
    perm: tuple[int, ...]
    view_in: int
    view_out: int
    feature: tuple[str, int]

    @property
    def in_axis(self) -> int:
        """The reduction axis in ``source``'s own axis order."""
        return self.perm[self.view_in]

    @property
    def out_axis(self) -> int:
        return self.perm[self.view_out]

    @property
    def label(self) -> str:
        return self.node.name or self.node.op_type


def sparsify(
    model: ir.Model,
    *,
    structure: str,
    sparsity: float = 0.5,
    n: int = 2,
    m: int = 4,
    importance: str = "magnitude",
    data: Iterable[dict[str, np.ndarray]] | None = None,
    ops: Sequence[str] = _OPS,
    exclude: Sequence[str] = (),
    max_batches: int | None = None,
    allocate: str = "uniform",
) -> tuple[dict[str, int], list[str]]:
    """Zero weights of ``model``'s Conv/MatMul/Gemm in place; return (stats, notes).

    ``data``: calibration batches for ``importance="activation"`` (at most ``max_batches``
    of them are read); ``exclude``: node names left dense. ``allocate="adaptive"``
    (unstructured): per-layer sparsities spread around ``sparsity`` by outlier ratio, as
    OWL does (:func:`_outlier_sparsities`), the same fraction of weights zeroed overall.

    stats: ``layers_sparsified`` (nodes whose weight was sparsified), ``layers_skipped``,
    ``weights_zeroed`` (elements masked, over distinct weights), ``weights_total`` (elements
    of the sparsified weights). notes: each layer left dense, and why.
    """
    _check_options(structure, sparsity, n, m, importance, data, ops)
    groups, skipped = _plan(model.graph, set(ops), set(exclude))
    if structure == "nm":
        groups = _divisible(groups, m, skipped)
    scales = (_activation_scales(model, groups, data, max_batches, skipped)
              if importance == "activation" else {})
    stats = {"layers_sparsified": 0, "layers_skipped": 0, "weights_zeroed": 0,
             "weights_total": 0}
    usable = [source for source in groups if importance != "activation" or source in scales]
    rates = {}
    if allocate == "adaptive" and structure == "unstructured":
        rates = _outlier_sparsities({source: _score(groups[source][0], scales.get(source))
                                     for source in usable}, sparsity)
    errors: dict[str, float] = {}
    for source in usable:  # one layer's scores at a time: an LLM's would double its size
        layers = groups[source]
        first = layers[0]
        w = first.tensor.numpy()
        score = _score(first, scales.get(source))
        rate = rates.get(source, sparsity)
        if structure == "nm":
            keep = _nm_mask(score, first.in_axis, n, m)
        elif importance == "activation":
            keep = _row_mask(score, first.out_axis, rate)
        else:
            keep = _layer_mask(score, rate)
        if importance == "activation":
            errors[first.label] = _estimated_error(score, keep)
        _write(source, first, np.where(keep, w, np.zeros((), w.dtype)))
        stats["layers_sparsified"] += len(layers)
        stats["weights_zeroed"] += int(keep.size - np.count_nonzero(keep))
        stats["weights_total"] += int(keep.size)
    stats["layers_skipped"] = sum(len(names) for names in skipped.values())
    notes = [f"left dense ({reason}): {_listing(names)}" for reason, names in skipped.items()]
    if errors:
        stats["estimated_error"] = {"mean": float(np.mean(list(errors.values()))),  # type: ignore[assignment]
                                    "max": max(errors.values())}
        notes.extend(error_notes(errors, "sparsified layers keep an estimated relative output "
                                 "error (Wanda's diagonal terms)"))
    if any(node.op_type in ops for node in model.graph.all_nodes() if node.graph is not
           model.graph):
        notes.append("layers inside subgraphs (If/Loop/Scan bodies) are left dense")
    logger.debug("sparsify: %s", stats)
    return stats, notes


def _score(layer: _Layer, scale: np.ndarray | None) -> np.ndarray:
    """``|W|``, times the input's feature norms when given (Wanda)."""
    w = layer.tensor.numpy()
    score = np.abs(w.astype(np.float64 if w.dtype == np.float64 else np.float32))
    return score if scale is None else score * scale.astype(score.dtype)


def _estimated_error(score: np.ndarray, keep: np.ndarray) -> float:
    """Wanda's scores squared, ``W_ij^2 ||X_j||^2``, are the diagonal terms of the layer's
    output energy on the calibration data: the share of them zeroed, square-rooted, is the
    relative output error the mask leaves if the features were uncorrelated."""
    squares = np.square(score, dtype=np.float64)
    return float(np.sqrt(squares[~keep].sum() / max(squares.sum(), 1e-30)))


#: a layer whose estimated relative output error passes this is named in a note
ERROR_WARNING = 0.3


def error_notes(errors: dict[str, float], what: str) -> list[str]:
    """A note naming the layers (``what`` says which and how estimated) whose estimated
    relative output error passes ``ERROR_WARNING``; none when no layer does."""
    worst = sorted(((e, n) for n, e in errors.items() if e > ERROR_WARNING), reverse=True)
    if not worst:
        return []
    shown = ", ".join(f"{n} {e:.2f}" for e, n in worst[:3])
    return [f"{len(worst)} of {len(errors)} {what} above {ERROR_WARNING}: {shown}"
            f"{', ...' if len(worst) > 3 else ''}; expect a large quality loss (compress less)"]


def _check_options(structure: str, sparsity: float, n: int, m: int, importance: str,
                   data: Any, ops: Sequence[str]) -> None:
    where = "prune"
    if structure not in STRUCTURES:
        raise BadInputError(f"{where}: structure must be one of {', '.join(STRUCTURES)}, "
                            f"not {structure!r}")
    if importance not in IMPORTANCES:
        raise BadInputError(f"{where}: importance must be magnitude or activation, "
                            f"not {importance!r}")
    if not 0.0 <= sparsity < 1.0:
        raise BadInputError(f"{where}: sparsity must be in [0, 1) (the fraction of weights "
                            f"zeroed), not {sparsity}")
    if not 1 <= n < m:
        raise BadInputError(f"{where}: N:M needs 1 <= n < m (keep n of every m, e.g. n=2, "
                            f"m=4), not n={n}, m={m}")
    if unknown := set(ops) - set(_OPS):
        raise BadInputError(f"{where}: ops may name Conv, MatMul and Gemm, not "
                            f"{sorted(unknown)}")
    if importance == "activation" and data is None:
        raise BadInputError(f"{where}(importance=activation) needs calibration data: give "
                            "--calibration FILE.npz (arrays named after the model's inputs), "
                            "or use importance=magnitude")


# ----------------------------------------------------------------------------- planning


def _plan(graph: ir.Graph, ops: set[str], exclude: set[str]
          ) -> tuple[dict[ir.Value, list[_Layer]], dict[str, list[str]]]:
    """The layers to sparsify grouped by the constant they read (in graph order), and the
    names of those left dense by reason."""
    groups: dict[ir.Value, list[_Layer]] = {}
    skipped: dict[str, list[str]] = collections.defaultdict(list)
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ops:
            continue
        layer = None if node.name in exclude else _layer(node)
        reason = ("excluded" if node.name in exclude
                  else "weight is not a constant" if layer is None else _unusable(layer))
        if reason is not None:
            skipped[reason].append(node.name or node.op_type)
        else:
            assert layer is not None
            groups.setdefault(layer.source, []).append(layer)
    for source, layers in list(groups.items()):
        if (reason := _shared_obstacle(source, layers)) is not None:
            skipped[reason].extend(layer.label for layer in layers)
            del groups[source]
    return groups, skipped


def _layer(node: ir.Node) -> _Layer | None:
    """The layer's constant weight (directly, or through a Transpose of one) and its axes;
    None when the weight is not a constant."""
    source = weight_source(node.inputs[1] if len(node.inputs) > 1 else None)
    layer = linear_layer(node)
    if source is None or layer is None:
        return None
    rank = len(source.perm)  # a MatMul's axes count from the end
    view_in, view_out = (layer.in_axis % rank, layer.out_axis % rank) if rank else (-2, -1)
    x = node.inputs[0]
    return _Layer(node, source.value, source.tensor, source.via, source.perm, view_in, view_out,
                  (x.name if x is not None and x.name else "", layer.feature_axis))


def _unusable(layer: _Layer) -> str | None:
    if layer.tensor.dtype not in _FLOATS:
        return f"weight is {layer.tensor.dtype}, not float"
    least = 3 if layer.node.op_type == "Conv" else 2
    if len(layer.perm) < least or layer.node.op_type == "Gemm" and len(layer.perm) != 2:
        return "weight has an unexpected rank"
    return None


def _shared_obstacle(source: ir.Value, layers: list[_Layer]) -> str | None:
    """Why a weight cannot be sparsified for these readers, or None: something else reads
    it (or it is a graph output), or they read it along different axes."""
    nodes = {layer.node for layer in layers}
    vias = {layer.via for layer in layers if layer.via is not None}
    if any(v.is_graph_output() for v in [source, *(via.outputs[0] for via in vias)]):
        return "weight is a graph output"
    for user, _ in source.uses():
        readers = [r for r, _ in user.outputs[0].uses()] if user in vias else [user]
        if any(reader not in nodes for reader in readers):
            return "weight also read by other nodes"
    if len({(layer.in_axis, layer.out_axis) for layer in layers}) > 1:
        return "weight read along different axes"
    return None


def _divisible(groups: dict[ir.Value, list[_Layer]], m: int,
               skipped: dict[str, list[str]]) -> dict[ir.Value, list[_Layer]]:
    """The groups whose reduction axis is a multiple of ``m``; the others noted."""
    kept = {}
    for source, layers in groups.items():
        width = layers[0].tensor.shape[layers[0].in_axis]
        if width % m:
            skipped[f"reduction axis not a multiple of m={m}"].extend(
                f"{layer.label} ({width})" for layer in layers)
        else:
            kept[source] = layers
    return kept


# ----------------------------------------------------------------------------- activations


def _activation_scales(model: ir.Model, groups: dict[ir.Value, list[_Layer]], data: Any,
                       max_batches: int | None, skipped: dict[str, list[str]]
                       ) -> dict[ir.Value, np.ndarray]:
    """``||X_j||`` laid out along each weight's reduction axis (broadcastable to it), from one
    calibration run; readers of a shared weight pool their sums of squares."""
    keys = sorted({layer.feature for layers in groups.values() for layer in layers
                   if layer.feature[0]})
    sums: dict[tuple[str, int], np.ndarray] = {}
    by_name: dict[str, list[int]] = collections.defaultdict(list)
    for name, axis in keys:
        by_name[name].append(axis)
    if keys:
        stream(model, {name: [_accumulator(name, axes, sums)] for name, axes in by_name.items()},
               data, max_batches=max_batches)
    scales = {}
    for source, layers in groups.items():
        squares = [_squares(layer, sums.get(layer.feature)) for layer in layers]
        if any(s is None for s in squares):
            skipped["no activation norms for its input"].extend(
                layer.label for layer in layers)
            continue
        scales[source] = np.sqrt(sum(squares))  # type: ignore[arg-type]
    return scales


def _accumulator(name: str, axes: list[int], sums: dict[tuple[str, int], np.ndarray]
                 ) -> Callable[[np.ndarray], None]:
    def update(x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        for axis in axes:
            rows = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
            total = np.einsum("ij,ij->j", rows, rows)
            key = (name, axis)
            sums[key] = total if key not in sums else sums[key] + total

    return update


def _squares(layer: _Layer, total: np.ndarray | None) -> np.ndarray | None:
    """The input's per-feature sums of squares laid along the weight's reduction axis (for a
    grouped Conv, each output channel meets its group's channels), broadcastable to the
    weight in ``source``'s axis order; None when they do not fit it."""
    if total is None:
        return None
    shape = [int(layer.tensor.shape[axis]) for axis in layer.perm]  # as the node reads it
    width = shape[layer.view_in]
    if layer.node.op_type == "Conv":
        groups = total.size // width if total.size % width == 0 else 0
        if not groups or shape[0] % groups:
            return None
        group_of = np.arange(shape[0])[:, None] // (shape[0] // groups)
        view = total[group_of * width + np.arange(width)[None, :]]  # [O, C/g]
        view = view.reshape(view.shape + (1,) * (len(shape) - 2))
    elif total.size == width:
        view = total.reshape([width if i == layer.view_in else 1 for i in range(len(shape))])
    else:
        return None
    return np.transpose(view, np.argsort(layer.perm))  # back to source's axis order


# ----------------------------------------------------------------------------- masks


#: OWL's outlier threshold (a score above M x the layer's mean) and spread (+- LAMBDA)
OUTLIER_M, OUTLIER_LAMBDA = 5.0, 0.08


def _outlier_sparsities(scores: dict[ir.Value, np.ndarray], sparsity: float
                        ) -> dict[ir.Value, float]:
    """OWL (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): a layer with more
    outlier scores keeps more of its weights. Per layer ``S + lambda - 2 lambda d`` with
    ``d`` its outlier ratio scaled to [0, 1] across layers, then shifted so that the
    size-weighted mean is ``S`` again, and clipped to [0, 0.99]."""
    ratios = {k: float((s > OUTLIER_M * s.mean()).mean()) for k, s in scores.items()}
    low, high = min(ratios.values(), default=0.0), max(ratios.values(), default=0.0)
    spread = high - low
    rates = {k: sparsity + OUTLIER_LAMBDA - 2 * OUTLIER_LAMBDA * ((r - low) / spread
                                                                  if spread else 0.5)
             for k, r in ratios.items()}
    sizes = {k: s.size for k, s in scores.items()}
    shift = sparsity - sum(rates[k] * sizes[k] for k in rates) / max(sum(sizes.values()), 1)
    return {k: float(np.clip(v + shift, 0.0, 0.99)) for k, v in rates.items()}


def _round(fraction: float, count: int) -> int:
    return min(count, int(np.floor(fraction * count + 0.5)))


def _prune_smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """A keep-mask of ``scores [rows, width]`` with the ``count`` smallest of each row
    dropped; a stable sort, so equal scores go in index order."""
    keep = np.ones(scores.shape, bool)
    order = np.argsort(scores, axis=-1, kind="stable")[..., :count]
    np.put_along_axis(keep, order, False, axis=-1)
    return keep


def _layer_mask(score: np.ndarray, sparsity: float) -> np.ndarray:
    flat = score.reshape(1, -1)
    return _prune_smallest(flat, _round(sparsity, flat.size)).reshape(score.shape)


def _row_mask(score: np.ndarray, out_axis: int, sparsity: float) -> np.ndarray:
    rows = np.moveaxis(score, out_axis, 0)
    shape = rows.shape
    rows = rows.reshape(shape[0], -1)
    keep = _prune_smallest(rows, _round(sparsity, rows.shape[1]))
    return np.moveaxis(keep.reshape(shape), 0, out_axis)


def _nm_mask(score: np.ndarray, in_axis: int, n: int, m: int) -> np.ndarray:
    moved = np.moveaxis(score, in_axis, -1)
    shape = moved.shape
    keep = _prune_smallest(moved.reshape(-1, m), m - n)
    return np.moveaxis(keep.reshape(shape), -1, in_axis)


# ----------------------------------------------------------------------------- helpers


def _write(source: ir.Value, layer: _Layer, array: np.ndarray) -> None:
    """The new values under the same name: an initializer's tensor, or a Constant's value."""
    tensor = ir.Tensor(array, dtype=layer.tensor.dtype, name=source.name)
    producer = source.producer()
    if producer is not None and producer.op_type == "Constant":
        producer.attributes.clear()  # it may have held value_floats or the like
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
    if source.const_value is not None:
        source.const_value = tensor


def _listing(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")
