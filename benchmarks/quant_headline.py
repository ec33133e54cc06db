"""Issue 4's headline numbers, at the issue's settings: ViT-S/16 (deit_small) at 224 px,
ResNet-50, all-MiniLM-L6-v2 on real sentences padded to 128 tokens; fp32 against ONNX
Runtime's quantizers, the peers that installed, and ``onnxpress compile --passes int8``.

    python benchmarks/quant_headline.py [--rounds 15] [--models deit_small,resnet50,minilm]

Reads the variant files ``benchmarks/run.py --suite quant`` cached in results/quant/MODEL/
(run that first); times each model's variants interleaved (``bench_models``: 2 threads,
no spinning, medians of ``--rounds`` rounds) at batch 1 and 8. Quality: MiniLM's metrics on
the 300-sentence text set against its fp32 embeddings; the others' output cosine and top-1
agreement against fp32 on the suite's 32 comparison inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import onnxpress
from onnxpress.backends.bench import bench_models

HERE = Path(__file__).resolve().parent
VARIANTS = ("fp32", "dynamic", "qdq-u8s8", "qop-u8s8", "modelopt-int8", "inc-int8",
            "onnxpress-int8")
TEXTS = HERE.parent / "models" / "minilm_texts.json"


def feeds_for(model: str, folder: Path) -> dict[str, np.ndarray]:
    if model != "minilm":
        return dict(np.load(folder / "compare.npz"))
    from onnxpress.models.minilm import tokenize

    sentences = [s["text"] for s in json.loads(TEXTS.read_text())["sentences"]]
    return tokenize(sentences[200:208], pad_to=128)


def quality(model: str, fp32: Path, path: Path, feeds: dict[str, np.ndarray]) -> str:
    if model == "minilm":
        m = onnxpress.evaluate(path, "minilm-texts").metrics
        return f"cos {m['mean_cosine']:.4f}, spearman {m['spearman']:.4f}"
    c = onnxpress.compare(fp32, path, [feeds], batches=1)[0]
    return f"cos {c['cosine']:.4f}, top-1 {c['top1_agreement']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deit_small,resnet50,minilm")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "quant")
    args = parser.parse_args()
    print("| model | variant | b1 ms | b1 speed-up | b8 speed-up | size % | quality |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        folder = args.results / model
        paths = [(v, folder / f"{v}.onnx") for v in VARIANTS if (folder / f"{v}.onnx").exists()]
        feeds = feeds_for(model, folder)
        rows = {b: {r.model: r for r in bench_models([(v, str(p)) for v, p in paths], batch=b,
                                                      repeats=args.rounds, feeds=feeds)}
                for b in (1, 8)}
        fp32 = folder / "fp32.onnx"
        for variant, path in paths:
            b1, b8 = rows[1][variant], rows[8][variant]
            size = 100 * path.stat().st_size / fp32.stat().st_size
            print(f"| {model} | {variant} | {b1.median_ms:.1f} | "
                  f"{rows[1]['fp32'].median_ms / b1.median_ms:.2f}x | "
                  f"{rows[8]['fp32'].median_ms / b8.median_ms:.2f}x | {size:.0f} | "
                  f"{quality(model, fp32, path, feeds)} |", flush=True)


if __name__ == "__main__":
    main()
