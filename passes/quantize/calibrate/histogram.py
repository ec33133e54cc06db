"""A streaming histogram with bounded memory whose result does not depend on how the data
was split into batches.

Scheme: bins have width ``w = 2**e`` and absolute indices, bin ``i`` holding ``[i*w, (i+1)*w)``;
at most ``bins`` of them are kept. The span always includes 0 (quantization ranges do), so 0
is a bin edge and the histogram folds exactly into one of ``|x|``. When a batch falls outside
what ``bins`` bins of the current width can hold, ``e`` grows and pairs of neighbouring bins
merge (index ``i`` becomes ``i >> 1``), which is exact because ``floor(floor(x/w)/2) =
floor(x/2w)``; dividing by a power of two is exact in floating point too. The width reached
is the smallest power of two that fits all the data seen, whatever the batch boundaries, so
the counts are the same as one histogram of the concatenated data. Memory: ``bins`` float64
counts (32 KiB at the default), never the activations. Resolution: the span over between
``bins / 2`` and ``bins`` bins.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 4096


class StreamingHistogram:
    """Counts of every finite value given to ``update``; non-finite values are skipped."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 16:
            raise ValueError(f"a histogram needs at least 16 bins, not {bins}")
        self.bins = bins
        self.total = 0  # finite values seen
        self.zeros = 0  # of them exactly 0.0
        self.min = math.inf
        self.max = -math.inf
        self._exponent: int | None = None  # bin width 2**exponent; None until a nonzero value
        self._start = 0  # absolute index of _counts[0]
        self._counts = np.zeros(bins, dtype=np.float64)

    @property
    def width(self) -> float | None:
        return None if self._exponent is None else math.ldexp(1.0, self._exponent)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        x = x.reshape(-1)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        zeros = x.size - int(np.count_nonzero(x))
        self.total += x.size
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if lo == hi == 0.0 and self._exponent is None:
            self.zeros += zeros  # binned once the first nonzero value fixes a width
            return
        self._fit()
        if x.size == zeros:
            self._counts[-self._start] += zeros
        else:
            self._counts += np.bincount(self._indices(x) - self._start, minlength=self.bins)
        self.zeros += zeros

    def _span(self, exponent: int) -> tuple[int, int]:
        """First and last absolute bin index of all data seen (and 0) at width 2**exponent."""
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        return math.floor(math.ldexp(lo, -exponent)), math.floor(math.ldexp(hi, -exponent))

    def _fit(self) -> None:
        """Grow the width (merging bins) and move the window so that all data fits."""
        if self._exponent is None:
            _, power = math.frexp((max(self.max, 0.0) - min(self.min, 0.0)) / self.bins)
            exponent = power - 2  # too fine by construction: the loop finds the smallest fit
            first_time = True
        else:
            exponent, first_time = self._exponent, False
        while self._span(exponent)[1] - self._span(exponent)[0] + 1 > self.bins:
            exponent += 1
        first, _ = self._span(exponent)
        if first_time:
            self._exponent, self._start = exponent, first
            self._counts[-first] += self.zeros  # zeros of earlier batches, before any width
            return
        last = self._span(exponent)[1]
        if exponent == self._exponent and self._start <= first and last < self._start + self.bins:
            return
        occupied = np.flatnonzero(self._counts)
        shift = exponent - self._exponent
        merged = ((occupied + self._start) >> shift) - first
        self._counts = np.bincount(merged, weights=self._counts[occupied], minlength=self.bins)
        self._exponent, self._start = exponent, first

    def _indices(self, x: np.ndarray) -> np.ndarray:
        assert self._exponent is not None
        if x.dtype == np.float32 and abs(self._exponent) < 120:
            scaled = x * np.float32(math.ldexp(1.0, -self._exponent))
        else:
            scaled = np.ldexp(x.astype(np.float64), -self._exponent)
        return np.floor(scaled, out=scaled).astype(np.int64)

    def signed(self) -> tuple[np.ndarray, float, float]:
        """(counts, first edge, bin width) over the occupied bins, which cover
        [min(0, data min), max(0, data max)]. Empty counts before any nonzero value."""
        if self._exponent is None:
            return np.zeros(0), 0.0, 0.0
        first, last = self._span(self._exponent)
        counts = self._counts[first - self._start : last - self._start + 1].copy()
        width = math.ldexp(1.0, self._exponent)
        return counts, first * width, width

    def absolute(self) -> tuple[np.ndarray, float]:
        """(counts, bin width) of |x|: bin j holds |x| in [j*w, (j+1)*w) (negative values
        on an edge move one bin up, which no consumer can tell apart)."""
        counts, start, width = self.signed()
        if counts.size == 0:
            return counts, width
        first = round(start / width)
        index = np.arange(first, first + counts.size)
        folded = np.where(index < 0, -index - 1, index)
        return np.bincount(folded, weights=counts), width
