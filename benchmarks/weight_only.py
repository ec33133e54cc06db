"""``weight-only`` benchmark: the real all-MiniLM-L6-v2 (dynamo export), fp32 against int8 and
int4 weights (symmetric, block 32, round to nearest) in both formats, plus int4 with GPTQ and
MatMulNBits with ``accuracy_level=4``.

    python benchmarks/weight_only.py [--repeats 20] [--threads 2] [--seq 128]
        [--cache-dir benchmarks/results/weight_only] [--out benchmarks/results/weight_only.json]

Per variant: the file size, the bytes of the quantized MatMul weights against their fp32
bytes, latency on ONNX Runtime CPU (default optimisation level, ``--threads`` intra-op
threads, batch 1 and 8 of texts padded to ``--seq`` tokens, variants interleaved round by
round by ``onnxpress.backends.bench.bench_models``) and the cosine of each sentence embedding
with fp32's over the first 64 texts of ``models/minilm_texts.json`` (mean and min). GPTQ
calibrates on texts 100-163, disjoint from those scored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import onnxpress
from onnxpress.backends.bench import bench_models
from onnxpress.backends.ort_runner import Runner
from onnxpress.passes.quantize.weight_only import WeightOnly

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "fp32": None,
    "dq int8": WeightOnly(bits=8),
    "dq int4": WeightOnly(bits=4),
    "dq int4 gptq": WeightOnly(bits=4, method="gptq"),
    "nbits int8": WeightOnly(bits=8, format="matmulnbits"),
    "nbits int4": WeightOnly(bits=4, format="matmulnbits"),
    "nbits int4 acc4": WeightOnly(bits=4, format="matmulnbits", accuracy_level=4),
}


def texts() -> list[str]:
    sentences = json.loads((HERE.parent / "models" / "minilm_texts.json").read_text())
    return [s["text"] for s in sentences["sentences"]]


def prepare(cache: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The variants' files, and what the pass reported for each."""
    from onnxpress.models.minilm import minilm_onnx, tokenize

    cache.mkdir(parents=True, exist_ok=True)
    source = minilm_onnx()  # the shared cache ($ONNXPRESS_CACHE or ~/.cache/onnxpress)
    calibration = [tokenize(texts()[start : start + 16]) for start in range(100, 164, 16)]
    files, stats = {"fp32": source}, {"fp32": {}}
    for variant, weight_only in VARIANTS.items():
        if weight_only is None:
            continue
        model, report = onnxpress.compile(source, [weight_only], calibration=calibration,
                                          return_report=True)
        stats[variant] = report.passes[-1].stats
        files[variant] = cache / f"minilm.{variant.replace(' ', '_')}.onnx"
        onnxpress.save(model, files[variant])
        print(f"{variant}: {stats[variant]}")
    return files, stats


def cosines(reference: Path, other: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    expected = Runner(reference, threads=2).run(feeds)["sentence_embedding"]
    actual = Runner(other, threads=2).run(feeds)["sentence_embedding"]
    return np.sum(expected * actual, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))


OPTIONS = (  # flag, type, default, help
    ("--repeats", int, 20, "timed rounds per batch size"),
    ("--threads", int, 2, "ONNX Runtime intra-op threads"),
    ("--seq", int, 128, "tokens per text when timed"),
    ("--cache-dir", Path, HERE / "results" / "weight_only", "where the variants are written"),
    ("--out", Path, HERE / "results" / "weight_only.json", "the JSON table"),
)


def main(argv: list[str] | None = None) -> int:
    from onnxpress.models.minilm import tokenize

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    files, stats = prepare(args.cache_dir)
    scored = tokenize(texts()[:64])
    rows = {v: {"variant": v, "file_mb": path.stat().st_size / 2**20,
                "weight_ratio": (stats[v]["quantized_bytes"] / stats[v]["float_bytes"]
                                 if stats[v] else 1.0)} for v, path in files.items()}
    for variant, path in files.items():
        cos = cosines(files["fp32"], path, scored)
        rows[variant].update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))
    timing_feeds = tokenize(texts()[:8], pad_to=args.seq)
    for batch in (1, 8):
        timed = bench_models(list(files.items()), threads=args.threads, batch=batch,
                             repeats=args.repeats, feeds=timing_feeds, progress=False)
        for row in timed:
            rows[row.model][f"b{batch}_ms"] = row.median_ms
    print(f"\n{'variant':16} {'file MB':>8} {'weights':>8} {'b1 ms':>7} {'b8 ms':>7} "
          f"{'cos mean':>9} {'cos min':>8}")
    for r in rows.values():
        print(f"{r['variant']:16} {r['file_mb']:>8.1f} {r['weight_ratio']:>8.3f} "
              f"{r['b1_ms']:>7.1f} {r['b8_ms']:>7.1f} {r['cos_mean']:>9.5f} {r['cos_min']:>8.5f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "seq": args.seq,
                                    "repeats": args.repeats, "rows": list(rows.values())},
                                   indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
