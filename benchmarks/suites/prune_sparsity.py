"""``prune_sparsity``: weight sparsity with ``prune``, unstructured 50% and 2:4, magnitude
against activation-aware (Wanda) importance, one-shot (no fine-tuning), on the digits CNN and
ViT (top-1 on ``digits``) and the real all-MiniLM-L6-v2 (``minilm-texts``: retrieval
agreement with the fp32 embeddings, spearman, mean cosine).

Per variant: the metric (measured on the file saved with sparse initializers, which ONNX
Runtime reads back bit-identically to the dense one), the fraction of the sparsified layers'
weights zeroed, and the file sizes saved dense and with ``sparse=True``. Calibration:
``models/digits_calibration.npz`` in batches of 32 for digits; texts 100-163 of
``models/minilm_texts.json`` for MiniLM, as the ``weight_only`` suite does (the
``minilm-texts`` metric reads all 300 sentences, so those 64 are among them).

    python -m benchmarks.run --suite prune_sparsity [--models digits_cnn,digits_vit,minilm]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxpress

from ..core import subjects
from ..core.suite import Context, Row, Suite, log, row, step
from ..core.tables import table

VARIANTS = {"unstructured 50%": "structure=unstructured,sparsity=0.5",
            "2:4": "structure=nm,n=2,m=4"}
IMPORTANCES = ("magnitude", "activation")


def data_of(model: str) -> tuple[str, Any]:
    """(evaluation data set, calibration batches)."""
    if model == "minilm":
        from onnxpress.models.minilm import tokenize

        texts = subjects.minilm_texts()
        return "minilm-texts", [tokenize(texts[i : i + 16]) for i in range(100, 164, 16)]
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    return "digits", onnxpress.CalibrationData(CALIBRATION_NPZ, batch_size=32)


def measure(ctx: Context) -> list[Row]:
    rows = []
    for model in ctx.models:
        source = subjects.subject(model, ctx.cache).fp32
        data, calibration = data_of(model)
        plan = [("dense", "-", "")] + [(v, i, f"prune({o},importance={i})")
                                       for v, o in VARIANTS.items() for i in IMPORTANCES]
        for variant, importance, spec in plan:
            if variant != "dense" and not ctx.wants(variant):
                continue
            r = row(model, variant, importance=importance, spec=spec or "-")
            with step(r, "prune"):
                r.update(_measure(source, spec, data, calibration, ctx.folder(model), r))
            rows.append(r)
    return rows


def _measure(source: Path, spec: str, data: str, calibration: Any, folder: Path,
             r: Row) -> dict[str, Any]:
    model, report = onnxpress.compile(source, spec or [], calibration=calibration if spec
                                      else None, return_report=True, progress=False)
    stats = report.passes[-1].stats if spec else {}
    tag = f"{r['variant']}.{r['importance']}".replace(" ", "_").replace(":", "of")
    dense = onnxpress.save(model, folder / f"{tag.replace('%', '')}.onnx")
    sparse = onnxpress.save(model, folder / f"{tag.replace('%', '')}.sparse.onnx", sparse=True)
    evaluation = onnxpress.evaluate(sparse, data, progress=False)
    log(f"  {r['model']} {r['variant']} {r['importance']}: {evaluation.metric}="
        f"{evaluation.value:.4f} {dense.stat().st_size} -> {sparse.stat().st_size} bytes")
    return {"metric": evaluation.metric, "value": evaluation.value,
            "metrics": evaluation.metrics, "stats": stats,
            "zeroed": stats["weights_zeroed"] / stats["weights_total"] if stats else 0.0,
            "dense_bytes": dense.stat().st_size, "sparse_bytes": sparse.stat().st_size,
            "notes": report.passes[-1].notes if spec else []}


def tables(rows: list[Row]) -> dict[str, str]:
    base: dict[str, float] = {}

    def cells(r: Row) -> tuple[str, ...]:
        first = base.setdefault(r["model"], r["value"])
        return (f"{r['metric']} {r['value']:.4f}", f"{r['value'] - first:+.4f}",
                f"{r['zeroed']:.1%}", f"{r['dense_bytes'] / 1e6:.3f} MB",
                f"{r['sparse_bytes'] / 1e6:.3f} MB", f"{r['sparse_bytes'] / r['dense_bytes']:.3f}")

    header = ("model", "variant", "importance", "metric", "vs dense", "zeroed", "dense file",
              "sparse-init file", "ratio")
    return {"weight sparsity, one-shot": table(header, rows, cells,
                                               names=("model", "variant", "importance"))}


SUITE = Suite("prune_sparsity", __doc__, models=("digits_cnn", "digits_vit", "minilm"),
              smoke_models=("digits_cnn",), measure=measure, tables=tables,
              variants=("dense", *VARIANTS))
