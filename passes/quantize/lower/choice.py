"""Which form ``lower-qdq`` leaves: the QDQ form or ONNX Runtime's integer operators.

``form=auto`` is a rule, so that the same input and config give the same bytes: the
integer operators wherever they apply. Measured on ONNX Runtime 1.32, 2-core Xeon (AVX-512
VNNI, AMX), batch 1, the two forms ran within 3% of each other on seven real CNN exports
(YOLOv8n, YOLOX, PP-OCR's recogniser and detector, ddddocr, Magika; ORT fuses the QDQ
groups into the same kernels), and the integer operators ran faster on transformers
(QAttention and MatMulIntegerToFloat with its bias: the digits ViT 0.92 against 1.19 ms).

``form=measure`` times both instead and keeps the faster, for a machine where that rule
may not hold: both forms at batch 1 on the first sample of the data (``--calibration``;
random inputs without it, a dynamic axis set to ``inputs.DEFAULT_DIM``), interleaved, as
medians over ``ROUNDS`` runs. Ties go to the integer operators: QDQ must be ``MARGIN``
faster to be kept. Its output depends on the machine and its load, and its note says so;
the timings and the choice are the pass's stats.
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
AUTO_NOTE = ("lower-qdq(form=auto): integer operators wherever they apply (a rule, same "
             "bytes on every machine; form=measure times both forms here instead)")


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
    result.notes.append(f"lower-qdq(form=measure): QDQ {qdq_ms:.2f} ms, integer operators "
                        f"{qop_ms:.2f} ms at batch 1 on {inputs}: kept "
                        f"{'QDQ' if keep_qdq else 'the integer operators'} (a choice "
                        "that depends on this machine and its load)")
    result.stats.update(form="qdq" if keep_qdq else "qoperator", qdq_ms=round(qdq_ms, 3),
                        qoperator_ms=round(qop_ms, 3))
    result.modified = True
    return result
