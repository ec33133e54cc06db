"""``lower-qdq(form=auto)``: keep whichever of the QDQ form and the integer-operator form
runs faster on this machine, measured, since neither wins on every model: ONNX Runtime
fuses many QDQ groups itself, and where it does not, the integer operators are faster.

Both forms are timed at batch 1 on the first sample of the data (``--calibration``; random
inputs without it, a dynamic axis set to ``inputs.DEFAULT_DIM``), interleaved, as medians
over ``ROUNDS`` runs.
Ties go to the integer operators: QDQ must be ``MARGIN`` faster to be kept, so that noise
does not flip the choice between runs of a build. The timings and the choice are the
pass's stats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir

from onnxpress.backends import bench
from onnxpress.backends.inputs import ModelInputs
from onnxpress.passes.base import PassStats

ROUNDS = 15
MARGIN = 0.03


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _feeds(model: ir.Model, data: Any) -> dict | None:
    """The data's first sample, cut along each input's own sample axis (a scalar or a
    state input keeps its shape)."""
    if data is None:
        return None
    first = next(iter(data), None)
    return None if first is None else ModelInputs.of(model).first(first)


def lower_measured(model: ir.Model, lower: Callable[[ir.Model], PassStats],
                   data: Any = None) -> PassStats:
    """Lower ``model`` in place, time it against its QDQ form, and put the QDQ graph back
    when that form is faster by ``MARGIN``."""
    qdq = _copy(model)
    result = lower(model)
    if not result.modified:
        result.stats["form"] = "qdq"
        return result
    feeds = _feeds(model, data)
    rows = bench.bench_models([("qoperator", model), ("qdq", qdq)], batch=1, repeats=ROUNDS,
                        progress=False, feeds=feeds)
    qop_ms, qdq_ms = rows[0].median_ms, rows[1].median_ms
    keep_qdq = qdq_ms < qop_ms * (1 - MARGIN)
    if keep_qdq:
        model.graph = qdq.graph
        result = PassStats(model, modified=True)
    inputs = "the data's first sample" if feeds is not None else "random inputs"
    result.notes.append(f"lower-qdq(form=auto): QDQ {qdq_ms:.2f} ms, integer operators "
                        f"{qop_ms:.2f} ms at batch 1 on {inputs}: kept "
                        f"{'QDQ' if keep_qdq else 'the integer operators'}")
    result.stats.update(form="qdq" if keep_qdq else "qoperator", qdq_ms=round(qdq_ms, 3),
                        qoperator_ms=round(qop_ms, 3))
    result.modified = True
    return result
