"""``fuse-for-ort`` benchmark: DeiT-S/16 and the real all-MiniLM-L6-v2 (dynamo exports), fp32
against fp32 + ``fuse-for-ort``, and against the same with ``skip_layer_norm=True`` (off by
default in the pass; timed here to show why).

    python benchmarks/fuse_for_ort.py [--repeats 30] [--threads 2] [--seq 128]
        [--cache-dir benchmarks/results/fuse_for_ort] [--out benchmarks/results/fuse_for_ort.json]

Latency on ONNX Runtime CPU at its default optimisation level (ORT_ENABLE_ALL), ``--threads``
intra-op threads, batch 1 and 8, variants interleaved round by round
(``onnxpress.backends.bench.bench_models``) so that a noisy machine slows all alike. DeiT gets
seeded random images; MiniLM the first sentences of ``models/minilm_texts.json`` tokenized
and padded to ``--seq`` tokens. The largest output difference from fp32 (relative to the
output's scale) is reported with each variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import onnxpress
from onnxpress.backends.bench import bench_models
from onnxpress.backends.ort_runner import Runner
from onnxpress.passes.ort_fusion import FuseForOrt

HERE = Path(__file__).resolve().parent
VARIANTS = {"fp32": None, "fuse-for-ort": FuseForOrt(),
            "fuse-for-ort+skipln": FuseForOrt(skip_layer_norm=True)}


def prepare(cache: Path, seq: int) -> dict[str, tuple[dict[str, Path], dict[str, np.ndarray]]]:
    """Per model: the variants' files and 8 samples of inputs."""
    from onnxpress.models.minilm import minilm_onnx, tokenize
    from onnxpress.models.zoo import ZOO

    cache.mkdir(parents=True, exist_ok=True)
    deit = cache / "deit_small.onnx"
    if not deit.is_file():
        ZOO["deit_small"].export(deit)
    sentences = json.loads((HERE.parent / "models" / "minilm_texts.json").read_text())
    texts = [s["text"] for s in sentences["sentences"]]
    images = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    sources = {
        "deit_small": (deit, {"pixel_values": images}),
        "minilm": (minilm_onnx(cache), tokenize(texts[:8], pad_to=seq)),
    }
    prepared = {}
    for name, (source, feeds) in sources.items():
        files = {}
        for variant, fusion in VARIANTS.items():
            if fusion is None:
                files[variant] = source
                continue
            model = onnxpress.load(source)
            result = fusion(model)
            print(f"{name} {variant}: {result.stats}")
            files[variant] = cache / f"{name}.{variant}.onnx"
            onnxpress.save(model, files[variant])
        prepared[name] = (files, feeds)
    return prepared


def max_rel_diff(reference: Path, other: Path, feeds: dict[str, np.ndarray]) -> float:
    expected = Runner(reference, threads=2).run(feeds)
    actual = Runner(other, threads=2).run(feeds)
    return max(float(np.max(np.abs(expected[k].astype(np.float64) - actual[k]))
                     / max(float(np.max(np.abs(expected[k]))), 1e-30)) for k in expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128, help="MiniLM tokens per text")
    parser.add_argument("--cache-dir", type=Path, default=HERE / "results" / "fuse_for_ort")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuse_for_ort.json")
    args = parser.parse_args(argv)
    rows = []
    for name, (files, feeds) in prepare(args.cache_dir, args.seq).items():
        diffs = {v: max_rel_diff(files["fp32"], path, feeds) for v, path in files.items()}
        for batch in (1, 8):
            timed = bench_models([(v, p) for v, p in files.items()], threads=args.threads,
                                 batch=batch, repeats=args.repeats, feeds=feeds,
                                 progress=False)
            base = timed[0].median_ms
            for row in timed:
                rows.append({"model": name, "variant": row.model, "batch": batch,
                             "median_ms": row.median_ms, "p10_ms": row.p10_ms,
                             "p90_ms": row.p90_ms, "speedup": base / row.median_ms,
                             "max_rel_diff": diffs[row.model], "repeats": row.repeats})
    print(f"\n{'model':11} {'variant':20} {'batch':>5} {'median ms':>10} {'p10-p90 ms':>16} "
          f"{'speed-up':>8} {'max rel diff':>12}")
    for r in rows:
        spread = f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}"
        print(f"{r['model']:11} {r['variant']:20} {r['batch']:>5} {r['median_ms']:>10.2f} "
              f"{spread:>16} {r['speedup']:>7.3f}x {r['max_rel_diff']:>12.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "seq": args.seq, "rows": rows},
                                   indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
