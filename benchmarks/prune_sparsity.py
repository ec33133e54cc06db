"""``prune`` weight sparsity benchmark: unstructured 50% and 2:4, magnitude against
activation-aware (Wanda) importance, one-shot (no fine-tuning), on the digits CNN and ViT
(top-1 accuracy on ``digits``) and the real all-MiniLM-L6-v2 (``minilm-texts``: retrieval
agreement with the fp32 embeddings, spearman, mean cosine).

    python benchmarks/prune_sparsity.py [--models digits_cnn,digits_vit,minilm]
        [--cache-dir benchmarks/results/prune_sparsity]
        [--out benchmarks/results/prune_sparsity.json]

Per variant: the metric (measured on the file saved with sparse initializers, which ONNX
Runtime reads back bit-identically to the dense one), the fraction of the sparsified
layers' weights zeroed, and the file sizes saved dense and with ``sparse=True``. Calibration:
``models/digits_calibration.npz`` (disjoint from the test split) for digits; texts 100-163
of ``models/minilm_texts.json`` for MiniLM, as ``benchmarks/weight_only.py`` does (the
``minilm-texts`` metric reads all 300 sentences, so those 64 are among them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnxpress
from onnxpress.passes.prune.sparsity import sparsify

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
VARIANTS = {"unstructured 50%": {"structure": "unstructured", "sparsity": 0.5},
            "2:4": {"structure": "nm", "n": 2, "m": 4}}
IMPORTANCES = ("magnitude", "activation")


def subject(name: str) -> tuple[Path, str, Any]:
    """(model file, evaluation data set, calibration batches)."""
    if name == "minilm":
        from onnxpress.models.minilm import minilm_onnx, tokenize

        sentences = json.loads((MODELS / "minilm_texts.json").read_text())["sentences"]
        texts = [s["text"] for s in sentences]
        return minilm_onnx(), "minilm-texts", [tokenize(texts[i : i + 16])
                                               for i in range(100, 164, 16)]
    calibration = onnxpress.CalibrationData(MODELS / "digits_calibration.npz", batch_size=32)
    return MODELS / f"{name}.onnx", "digits", calibration


def measure(name: str, cache: Path) -> list[dict[str, Any]]:
    source, data, calibration = subject(name)
    base = onnxpress.load(source)
    rows = [row(name, "dense", "-", base, data, cache, {})]
    for variant, options in VARIANTS.items():
        for importance in IMPORTANCES:
            model = onnxpress.load(source)
            stats, notes = sparsify(model, importance=importance, data=calibration, **options)
            rows.append(row(name, variant, importance, model, data, cache, stats))
            for note in notes:
                print(f"  {name} {variant} {importance}: {note}")
    return rows


def row(name: str, variant: str, importance: str, model: Any, data: str, cache: Path,
        stats: dict[str, int]) -> dict[str, Any]:
    tag = f"{name}.{variant.replace(' ', '_').replace(':', 'of').replace('%', '')}.{importance}"
    dense = onnxpress.save(model, cache / f"{tag}.onnx")
    sparse = onnxpress.save(model, cache / f"{tag}.sparse.onnx", sparse=True)
    evaluation = onnxpress.evaluate(sparse, data)
    result = {"model": name, "variant": variant, "importance": importance,
              "metric": evaluation.metric, "value": evaluation.value,
              "metrics": evaluation.metrics, "stats": stats,
              "zeroed": stats["weights_zeroed"] / stats["weights_total"] if stats else 0.0,
              "dense_bytes": dense.stat().st_size, "sparse_bytes": sparse.stat().st_size}
    print(f"  {name} {variant} {importance}: {evaluation.metric}={evaluation.value:.4f} "
          f"{result['dense_bytes']} -> {result['sparse_bytes']} bytes")
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | variant | importance | metric | vs dense | zeroed | dense file | "
             "sparse-init file | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    base: dict[str, float] = {}
    for r in rows:
        base.setdefault(r["model"], r["value"])
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['importance']} | {r['metric']} "
            f"{r['value']:.4f} | {r['value'] - base[r['model']]:+.4f} | {r['zeroed']:.1%} | "
            f"{r['dense_bytes'] / 1e6:.3f} MB | {r['sparse_bytes'] / 1e6:.3f} MB | "
            f"{r['sparse_bytes'] / r['dense_bytes']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits_cnn,digits_vit,minilm")
    parser.add_argument("--cache-dir", type=Path, default=HERE / "results" / "prune_sparsity",
                        help="where the variants are written")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prune_sparsity.json")
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for name in args.models.split(",") for r in measure(name, args.cache_dir)]
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
