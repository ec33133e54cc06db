"""Calibration: observers that turn streamed activations into a clip range, and ``collect``,
which runs a model over calibration data and feeds the values a pass asks for to them.

Every observer has ``update(x)`` (once per batch; nothing of ``x`` is kept) and
``range() -> (lo, hi)``: 0-d arrays per tensor, 1-D per channel. ``range`` is the range to
quantize, not yet widened to include 0 (``quant_math.params_from_range`` does that); an
observer that saw no finite value returns (0, 0).

- ``MinMax``: exact extremes, per tensor or per channel (``axis``; every other axis reduced).
- ``Percentile``: drops ``(100 - percentile) / 2`` percent of the values at each end of the
  signed distribution (as ONNX Runtime's asymmetric percentile calibration does).
- ``Entropy``: TensorRT's KL-divergence calibration on the histogram of ``|x|``: the threshold
  ``T`` whose clipped distribution loses least information when quantized to ``levels``
  bins; the range is the data's own range clipped to [-T, T], so a one-sided tensor stays
  one-sided.
- ``Mse``: the clip [-T, T] ∩ data range minimising the expected squared error of a
  quantizer with ``levels`` levels over that range: clipping error from the histogram plus
  ``step**2 / 12`` rounding noise per value inside (exact zeros excepted: they stay exact).

The last three read a ``StreamingHistogram`` (``histogram.py``: bounded memory, results
independent of batch boundaries) and work per tensor; ``collect`` gives per-channel values a
``MinMax``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.passes.activations import stream
from onnxpress.passes.calibration_data import Batch, CalibrationData
from onnxpress.passes.quantize.calibrate.histogram import DEFAULT_BINS, StreamingHistogram

Range = tuple[np.ndarray, np.ndarray]

#: the most candidate thresholds Entropy and Mse evaluate (evenly spread over the bins)
MAX_CANDIDATES = 512


class Observer(abc.ABC):
    """Streams batches of one value and reports the range to quantize it to."""

    @abc.abstractmethod
    def update(self, x: np.ndarray) -> None: ...

    @abc.abstractmethod
    def range(self) -> Range: ...


class MinMax(Observer):
    """Exact min and max; with ``axis``, one pair per index of that axis (``axis=-1`` on
    activations gives the per-channel statistics SmoothQuant needs: abs-max =
    ``max(-lo, hi)``). Non-finite values are skipped."""

    def __init__(self, axis: int | None = None) -> None:
        self.axis = axis
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if self.axis is not None:
            x = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        if x.size == 0:
            return
        reduce = None if self.axis is None else 1
        lo, hi = x.min(axis=reduce), x.max(axis=reduce)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            x = np.where(np.isfinite(x), x, np.nan)
            lo, hi = np.fmin.reduce(x, axis=reduce), np.fmax.reduce(x, axis=reduce)
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if self._lo is None or self._hi is None:
            self._lo, self._hi = lo, hi
            return
        if lo.shape != self._lo.shape:
            raise ValueError(f"axis {self.axis} had {self._lo.size} channels, now {lo.size}")
        self._lo, self._hi = np.fmin(self._lo, lo), np.fmax(self._hi, hi)

    def range(self) -> Range:
        if self._lo is None or self._hi is None:
            return np.zeros(()), np.zeros(())
        return np.nan_to_num(self._lo), np.nan_to_num(self._hi)  # all-nan channels: 0


class _HistogramObserver(Observer):
    """Per-tensor observer over a ``StreamingHistogram``; subclasses choose the clip."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.histogram = StreamingHistogram(bins)

    def update(self, x: np.ndarray) -> None:
        self.histogram.update(x)

    def range(self) -> Range:
        h = self.histogram
        if h.width is None:  # nothing seen, or only zeros
            return np.zeros(()), np.zeros(())
        lo, hi = self._clip()
        return np.asarray(max(lo, h.min), np.float64), np.asarray(min(hi, h.max), np.float64)

    @abc.abstractmethod
    def _clip(self) -> tuple[float, float]: ...

    def _symmetric(self, threshold: float) -> tuple[float, float]:
        return -threshold, threshold


class Percentile(_HistogramObserver):
    """(lo, hi) = the ``(100-p)/2`` and ``100-(100-p)/2`` percentiles of signed x, interpolated
    linearly inside a bin: within one bin width of ``np.percentile(x, q,
    method="inverted_cdf")`` (the order statistic ``ceil(q * n)``)."""

    def __init__(self, percentile: float = 99.999, bins: int = DEFAULT_BINS) -> None:
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], not {percentile}")
        super().__init__(bins)
        self.percentile = percentile

    def _clip(self) -> tuple[float, float]:
        counts, start, width = self.histogram.signed()
        cut = (100.0 - self.percentile) / 200.0
        return _quantile(counts, start, width, cut), _quantile(counts, start, width, 1.0 - cut)


def _quantile(counts: np.ndarray, start: float, width: float, q: float) -> float:
    cumulative = np.cumsum(counts)
    target = q * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, target, side="left")), counts.size - 1)
    before = cumulative[index - 1] if index else 0.0
    inside = (target - before) / counts[index] if counts[index] else 0.0
    return start + (index + float(np.clip(inside, 0.0, 1.0))) * width


class Entropy(_HistogramObserver):
    """TensorRT's entropy calibration: for each candidate threshold ``T = i * w`` (``i`` from
    ``levels`` bins up), P = the |x| histogram up to ``T`` with the clipped mass added to its
    last bin, Q = P's unclipped part merged into ``levels`` groups and spread back evenly
    over the bins that are nonzero in P; the ``T`` with the least KL(P || Q) wins. Both are
    smoothed as MXNet/TensorRT do (a small ``eps`` moved into empty bins) so that KL stays
    finite. Exact zeros are left out: they stay exact under any threshold, and a ReLU's
    spike at 0 would otherwise pull T down. At most ``MAX_CANDIDATES`` thresholds are tried,
    evenly spaced."""

    def __init__(self, levels: int = 128, bins: int = DEFAULT_BINS) -> None:
        super().__init__(bins)
        self.levels = levels

    def _clip(self) -> tuple[float, float]:
        counts, width = self.histogram.absolute()
        counts[0] -= self.histogram.zeros  # exact zeros stay exact at any threshold
        nonzero = np.flatnonzero(counts)
        last = int(nonzero[-1]) + 1 if nonzero.size else 1
        counts = counts[:last]
        if last <= self.levels:
            return self._symmetric(last * width)
        best, best_kl = last, np.inf
        for stop in _candidates(self.levels, last):
            kl = _kl_after_quantization(counts, stop, self.levels)
            if kl < best_kl:
                best, best_kl = stop, kl
        return self._symmetric(best * width)


def _candidates(first: int, last: int) -> np.ndarray:
    """Bin counts from ``first`` to ``last`` (both included), at most MAX_CANDIDATES."""
    step = max(1, -(-(last - first) // MAX_CANDIDATES))
    return np.unique(np.append(np.arange(first, last + 1, step), last))


def _kl_after_quantization(counts: np.ndarray, stop: int, levels: int) -> float:
    reference = counts[:stop].copy()
    reference[-1] += counts[stop:].sum()
    group = np.arange(stop) * levels // stop
    nonzero = reference > 0
    sums = np.bincount(group, weights=counts[:stop], minlength=levels)
    members = np.bincount(group, weights=nonzero, minlength=levels)
    quantized = np.where(nonzero, sums[group] / np.maximum(members[group], 1), 0.0)
    p, q = _smooth(reference), _smooth(quantized)
    if p is None or q is None:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


def _smooth(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """MXNet's ``_smooth_distribution``: ``eps`` into every empty bin, taken evenly from the
    others; None when all are empty (or the others could not give it)."""
    empty = counts == 0
    filled = counts.size - int(empty.sum())
    if filled == 0:
        return None
    taken = eps * (counts.size - filled) / filled
    smoothed = np.where(empty, eps, counts - taken)
    return None if np.any(smoothed <= 0) else smoothed


class Mse(_HistogramObserver):
    """The clip minimising expected quantization MSE for a ``levels``-level quantizer:
    asymmetric (step = (hi - lo) / (levels - 1)) or, with ``symmetric``, restricted symmetric
    (step = max(-lo, hi) / ((levels - 2) / 2), int8's [-127, 127])."""

    def __init__(self, levels: int = 256, symmetric: bool = False,
                 bins: int = DEFAULT_BINS) -> None:
        super().__init__(bins)
        self.levels = levels
        self.symmetric = symmetric

    def _clip(self) -> tuple[float, float]:
        h = self.histogram
        counts, start, width = h.signed()
        centers = start + (np.arange(counts.size) + 0.5) * width
        extent = max(-min(h.min, 0.0), max(h.max, 0.0))
        stops = _candidates(1, int(np.ceil(extent / width)))
        errors = np.concatenate([
            self._errors(counts, centers, stops[i : i + 64] * width, h.zeros)
            for i in range(0, stops.size, 64)
        ])
        return self._symmetric(float(stops[int(np.argmin(errors))] * width))

    def _errors(self, counts: np.ndarray, centers: np.ndarray, thresholds: np.ndarray,
                zeros: int) -> np.ndarray:
        h = self.histogram
        lo = np.minimum(np.maximum(h.min, -thresholds), 0.0)[:, None]
        hi = np.maximum(np.minimum(h.max, thresholds), 0.0)[:, None]
        if self.symmetric:
            step = np.maximum(-lo, hi) / ((self.levels - 2) / 2)
        else:
            step = (hi - lo) / (self.levels - 1)
        clipped = np.clip(centers, lo, hi)
        clipping = np.sum(counts * (centers - clipped) ** 2, axis=1)
        inside = np.sum(counts * ((centers >= lo) & (centers <= hi)), axis=1) - zeros
        return clipping + np.maximum(inside, 0) * step[:, 0] ** 2 / 12


OBSERVERS: dict[str, Callable[[], Observer]] = {
    "minmax": MinMax,
    "percentile": Percentile,
    "entropy": Entropy,
    "mse": Mse,
}
"""Observer factories by the name the ``calibration=`` option uses."""


def collect(
    model: ir.Model,
    values: Sequence[str],
    data: CalibrationData | Iterable[Batch],
    *,
    method: str | Callable[[], Observer] = "minmax",
    per_channel: Mapping[str, int] | None = None,
    max_batches: int | None = None,
    progress: bool | None = None,
    feed: Mapping[str, Callable[[np.ndarray], None]] | None = None,
) -> dict[str, Observer]:
    """Run ``model`` over ``data`` and return an observer per named value (``values``, then
    any ``per_channel`` name not among them), fed every batch
    (:func:`onnxpress.passes.activations.stream`: one batch of activations alive at a time,
    the caller's model unchanged).

    ``method``: a name in ``OBSERVERS`` or a factory (e.g. ``lambda: Mse(symmetric=True)``).
    ``per_channel``: value name -> axis; those values get ``MinMax(axis)``. ``feed``: value
    name -> a callable also given each batch of that value (statistics other than a range,
    gathered in the same run). A value no batch computed (inside an If branch the data
    never took) has no observer.
    """
    factory = _factory(method)
    per_channel = dict(per_channel or {})
    names = list(dict.fromkeys([*values, *per_channel]))
    observers = {n: MinMax(per_channel[n]) if n in per_channel else factory() for n in names}
    sinks: dict[str, list[Callable[[np.ndarray], None]]] = {}
    for name, observer in observers.items():
        sinks.setdefault(name, []).append(observer.update)
    for name, callback in (feed or {}).items():
        sinks.setdefault(name, []).append(callback)
    seen: set[str] = set()
    for name in names:
        sinks[name].append(lambda _, name=name: seen.add(name))
    stream(model, sinks, data, max_batches=max_batches, progress=progress)
    return {name: observer for name, observer in observers.items() if name in seen}


def _factory(method: str | Callable[[], Observer]) -> Callable[[], Observer]:
    if callable(method):
        return method
    if method not in OBSERVERS:
        raise BadInputError(f"unknown calibration method {method!r}; "
                            f"choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[method]
