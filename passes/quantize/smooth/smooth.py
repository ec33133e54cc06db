"""``smooth``: SmoothQuant's migration of activation outliers into weights, before ``quantize``.

A transformer's normalized activations have a few channels far larger than the rest, so one
per-tensor activation scale wastes most of uint8's levels on them; weights are quantized per
output channel and have room to spare. For every site (:mod:`.sites`: a LayerNorm,
or a linear layer with an optional Relu, whose output feeds only MatMul/Gemm weights):

- ``LN(x; gamma, beta) -> MatMul(., W)``  ->  ``LN(x; gamma/s, beta/s) -> MatMul(., diag(s) W)``
- ``Relu(MatMul(a, W1) + b1) -> MatMul(., W2)``
  ->  ``Relu(MatMul(a, W1 diag(1/s)) + b1/s) -> MatMul(., diag(s) W2)``

with, per input channel ``j``, ``s_j = max|X_j|**alpha / max_readers(max|W_j,:|)**(1-alpha)``
(``max|X_j|`` over the calibration data; clamped to ``[1e-5, 1e5]``; 1 where either
statistic is zero). ``alpha`` moves difficulty from the activation (1) to the weights (0).

Exact in real arithmetic: the producer's output becomes ``X / s`` and every reader computes
``(X / s) @ (diag(s) W) = X @ W``; nothing is inserted into the graph. In float32 only
rounding changes (outputs agree to ~1e-6 relative). Without data the pass stops with a one-line
error: the scales come from real inputs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.quantize.calibrate.calibration import collect
from onnxpress.passes.quantize.smooth.sites import Edit, Site, find_sites

__all__ = ["Smooth"]

logger = logging.getLogger(__name__)

#: the range s is clamped to, so that no weight or gamma over- or underflows


@dataclasses.dataclass(frozen=True)
class Smooth(Pass):
    name = "smooth"

    alpha: float = 0.5  # migration strength: 0 keeps activations, 1 flattens them fully
    max_batches: int = 16
    data: Any = data_field()

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False, stats={
            "smoothed": 0, "consumers": 0, "skipped": 0, "min_scale": 1.0, "max_scale": 1.0})
        if self.data is None:
            raise BadInputError("smooth needs calibration data: give --calibration FILE.npz "
                                "(arrays named after the model's inputs)")
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInputError(f"smooth: alpha must be in [0, 1], not {self.alpha}")
        found = find_sites(model.graph)
        result.notes.extend(found.notes)
        result.stats["skipped"] = found.skipped
        if not found.sites:
            return result
        maxima = self._activation_maxima(model, found.sites)
        low, high = [], []
        for site in found.sites:
            x_max = maxima[site.value.name]
            if x_max.shape != (site.channels,):
                result.notes.append(f"{site.producer.op_type} {site.producer.name!r} not "
                                    f"smoothed: calibrated {x_max.size} channels, its readers "
                                    f"have {site.channels}")
                result.stats["skipped"] += 1
                continue
            scale = quant_math.smoothing_factors(x_max, _weight_maxima(site), self.alpha)
            _apply(model.graph, site, scale)
            logger.debug("smoothed %s: scales in [%.3g, %.3g]", site.producer.name,
                         scale.min(), scale.max())
            low.append(float(scale.min()))
            high.append(float(scale.max()))
            result.stats["smoothed"] += 1
            result.stats["consumers"] += len(site.readers)
        if low:
            result.stats["min_scale"] = float(f"{min(low):.4g}")
            result.stats["max_scale"] = float(f"{max(high):.4g}")
        result.modified = bool(low)
        return result

    def _activation_maxima(self, model: ir.Model, sites: list[Site]) -> dict[str, np.ndarray]:
        """max |X_j| per site, from one calibration run over the unchanged model (earlier
        sites' folds are exact, so the statistics stay true while they are applied)."""
        observers = collect(model, [], self.data, per_channel={s.value.name: -1 for s in sites},
                            max_batches=self.max_batches)
        maxima = {}
        for site in sites:
            lo, hi = observers[site.value.name].range()
            maxima[site.value.name] = np.maximum(-np.asarray(lo), np.asarray(hi)).reshape(-1)
        return maxima


def _weight_maxima(site: Site) -> np.ndarray:
    """max |W_j,:| per input channel j, over every reader's (current) weight."""
    result = np.zeros(site.channels)
    for edit in site.readers:
        weight = np.abs(np.asarray(constant_array(edit.node.inputs[edit.index]), np.float64))
        result = np.maximum(result, weight.max(axis=1 - edit.axis))
    return result


def _apply(graph: ir.Graph, site: Site, scale: np.ndarray) -> None:
    """Rescale every constant of ``site``: the producer's by 1/s, the readers' by s."""
    for edit in [*site.absorb, *site.readers]:
        value = edit.node.inputs[edit.index]
        array = constant_array(value)
        assert value is not None and array is not None  # checked when the site was found
        shape = [1] * max(array.ndim, 1)
        shape[edit.axis] = -1
        factor = (scale if edit.power > 0 else 1.0 / scale).reshape(shape)
        _replace_constant(graph, edit, value, (array.astype(np.float64) * factor).astype(
            array.dtype))


def _replace_constant(graph: ir.Graph, edit: Edit, old: ir.Value, array: np.ndarray) -> None:
    """Rewrite an initializer only ``edit`` reads in place (same name); otherwise give the
    node a new initializer and drop the old constant once nothing reads it."""
    if old.is_initializer() and not old.is_graph_input() and not old.is_graph_output() \
            and len(old.uses()) == 1:
        old.const_value = ir.tensor(array, name=old.name)
        old.shape = ir.Shape(array.shape)
        return
    new = Builder(graph).initializer(array, f"{old.name or 'constant'}_smooth")
    edit.node.replace_input_with(edit.index, new)
    if old.uses() or old.is_graph_output():
        return
    producer = old.producer()
    if old.is_initializer() and not old.is_graph_input():
        graph.initializers.pop(old.name)  # type: ignore[arg-type]
    elif producer is not None and producer.op_type == "Constant":
        graph.remove(producer, safe=True)
