"""The three-part check every pass family's tests make of a rewrite, in one place:

1. **count**: the pass did what it claims, in numbers that could fail: op counts (every
   subgraph included) and the parameter count, exact (``counts``) or lower than before
   (``fewer``);
2. **numerics**: ONNX Runtime on the result against ONNX Runtime on the original input, on
   the same feeds: bit-identical (``EXACT``, NaN-aware), within ``Within(rel, abs)`` of the
   largest reference value, or a per-sample cosine of at least ``Cosine(min)``;
3. **checker**: ``onnxpress.ir.verify`` and ``onnx.checker.check_model(full_check=True)``
   accept the result.

ORT runs with graph optimisations off and one thread unless ``optimize=True``, so a
difference comes from our rewrite, not from ORT's fusions; int8 kernels are exact
(``Runner``'s default).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.ir.agreement import cosine
from onnxpress.ir.analysis import count_parameters
from onnxpress.passes.report import Report

Source = ir.Model | onnx.ModelProto | str | Path
Feeds = Mapping[str, np.ndarray]
#: the IR version hand-built test models are written at: onnx >= 1.18's make_model writes 11,
#: which ONNX Runtime reads only from 1.23; the lowest versions pyproject claims must run them
IR_VERSION = 10


@dataclasses.dataclass(frozen=True)
class Exact:
    def describe(self) -> str:
        return "bit-identical"


@dataclasses.dataclass(frozen=True)
class Within:
    rel: float
    abs: float = 0.0

    def describe(self) -> str:
        return f"within {self.rel:g} x max|reference| + {self.abs:g}"


@dataclasses.dataclass(frozen=True)
class Cosine:
    min: float

    def describe(self) -> str:
        return f"per-sample cosine >= {self.min:g}"


EXACT = Exact()
Tolerance = Exact | Within | Cosine


@dataclasses.dataclass(frozen=True)
class Checked:
    model: ir.Model
    proto: onnx.ModelProto
    before: collections.Counter[str]
    after: collections.Counter[str]
    expected: dict[str, np.ndarray]
    actual: dict[str, np.ndarray]
    report: Report

    def stats(self, name: str) -> dict[str, Any]:
        """The stats of the last pass called ``name``."""
        return [record for record in self.report.passes if record.name == name][-1].stats


def run_ort(model: Source | bytes, feeds: Feeds, *, optimize: bool = False,
            threads: int = 1) -> dict[str, np.ndarray]:
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return Runner(model, threads=threads, optimize=optimize).run(dict(feeds))


def measures(model: ir.Model) -> collections.Counter[str]:
    """Op types over every graph, plus ``parameters`` (initializer elements)."""
    counts = collections.Counter(node.op_type for node in model.graph.all_nodes())
    counts["parameters"] = count_parameters(model)
    return counts


def checked_proto(model: ir.Model) -> onnx.ModelProto:
    """The checker part: our verifier and ONNX's full check accept ``model``."""
    onnxpress.ir.verify(model)
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def assert_close(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                 tolerance: Tolerance) -> None:
    """The numerics part: every output of ``actual`` agrees with ``expected``."""
    assert list(actual) == list(expected), f"output names {list(actual)} != {list(expected)}"
    for name, a in expected.items():
        b = actual[name]
        assert a.shape == b.shape and a.dtype == b.dtype, f"{name}: {_describe(a, b)}"
        assert _agrees(a, b, tolerance), \
            f"output {name!r} not {tolerance.describe()}: {_describe(a, b)}"


def _agrees(a: np.ndarray, b: np.ndarray, tolerance: Tolerance) -> bool:
    if isinstance(tolerance, Exact) or not np.issubdtype(a.dtype, np.floating):
        return np.array_equal(a, b, equal_nan=np.issubdtype(a.dtype, np.floating))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)):
        return False
    if isinstance(tolerance, Cosine):
        rows = a64.reshape(a64.shape[0], -1) if a64.ndim > 1 else a64.reshape(1, -1)
        other = b64.reshape(rows.shape)
        return all(cosine(x, y) >= tolerance.min for x, y in zip(rows, other))
    finite = ~np.isnan(a64)
    if not finite.any():
        return True
    scale = float(np.max(np.abs(a64[finite])))
    return float(np.max(np.abs(a64[finite] - b64[finite]))) <= tolerance.rel * scale \
        + tolerance.abs


def _describe(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return f"max |a-b| = {np.nanmax(diff) if diff.size else 0:.3g}, max |a| = " \
           f"{np.nanmax(np.abs(a)) if a.size else 0:.3g}"


def check_pass(passes: str, source: Source, feeds: Feeds, *, tolerance: Tolerance,
               counts: Mapping[str, int] | None = None, fewer: Collection[str] = (),
               expected: Mapping[str, np.ndarray] | None = None, optimize: bool = False,
               **compile_options: Any) -> Checked:
    """Compile ``source`` with ``passes`` (``compile_options`` go to ``onnxpress.compile``:
    ``calibration``, ``target``...) and make the three checks; what was compared comes back
    for further assertions. ``expected``: reference outputs from elsewhere (a PyTorch
    module, numpy) in place of ORT on ``source``."""
    original = onnxpress.load(source) if not isinstance(source, ir.Model) else source
    reference = onnxpress.to_proto(original)
    before = measures(original)
    expected = dict(expected) if expected is not None else run_ort(reference, feeds,
                                                                   optimize=optimize)
    model, report = onnxpress.compile(reference, passes, progress=False, return_report=True,
                                      **compile_options)
    after = measures(model)
    for key, value in (counts or {}).items():
        assert after[key] == value, f"{key}: {after[key]} after {passes}, expected {value}"
    for key in fewer:
        assert after[key] < before[key], f"{key}: {before[key]} -> {after[key]} after {passes}"
    proto = checked_proto(model)
    actual = run_ort(proto, feeds, optimize=optimize)
    assert_close(expected, actual, tolerance)
    return Checked(model, proto, before, after, expected, actual, report)
