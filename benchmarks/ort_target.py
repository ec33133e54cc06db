"""The ``ort-cpu`` target against ONNX Runtime's own quantizers, side by side in one run.

    python benchmarks/ort_target.py [--rounds 20] [--models minilm,deit_small]

Reads the fp32 export, its calibration set and ORT's variants that ``benchmarks/run.py
--suite quant`` cached in results/quant/MODEL/ (run that first): ``dynamic``
(``quantize_dynamic``), ``qdq-u8s8`` and ``qop-u8s8`` (``quantize_static``, QDQ and
QOperator). Builds ours from the same fp32 file and calibration set: ``onnxpress-qdq`` (the
int8 pipeline left in QDQ form), ``onnxpress-ort-cpu`` (``--target ort-cpu --passes int8``:
the form measured faster), and the same with ``ort-transformers`` first. Times every
variant interleaved at batch 1 and 8 (``bench_models``: 2 threads, no spinning, medians),
and scores them as ``quant_headline`` does (MiniLM on the 300-sentence set; images by
cosine and top-1 agreement against fp32 on the comparison inputs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quant_headline import feeds_for, quality

import onnxpress
from onnxpress.backends.bench import bench_models

HERE = Path(__file__).resolve().parent
PEERS = ("fp32", "dynamic", "qdq-u8s8", "qop-u8s8")
OURS = {
    "onnxpress-qdq": ("cleanup,fuse-for-ort(attention_bias=false),quantize(smooth=0.5),"
                      "fold-qdq", None),
    "onnxpress-ort-cpu": ("int8", "ort-cpu"),
    "onnxpress-ort-cpu+ortx": ("cleanup,fuse-for-ort(attention_bias=false),ort-transformers,"
                               "quantize(smooth=0.5),fold-qdq,lower-qdq(form=auto)", None),
}


def build(folder: Path) -> dict[str, Path]:
    calibration = folder / "calibration.npz"
    paths = {}
    for name, (passes, target) in OURS.items():
        model, report = onnxpress.compile(folder / "fp32.onnx", passes, target=target,
                                          calibration=calibration, return_report=True)
        paths[name] = folder / f"{name}.onnx"
        onnxpress.save(model, paths[name])
        for record in report.passes:
            if record.name == "lower-qdq" and "form" in record.stats:
                print(f"  {folder.name} {name}: lower-qdq chose {record.stats['form']} "
                      f"(qdq {record.stats.get('qdq_ms')} ms, qoperator "
                      f"{record.stats.get('qoperator_ms')} ms)", flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="minilm,deit_small")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "quant")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ort_target.json")
    args = parser.parse_args()
    table = ["| model | variant | b1 ms | b1 vs fp32 | b8 ms | b8 vs fp32 | size % | quality |",
             "|---|---|---|---|---|---|---|---|"]
    rows = []
    for model in args.models.split(","):
        folder = args.results / model
        paths = {v: folder / f"{v}.onnx" for v in PEERS if (folder / f"{v}.onnx").exists()}
        paths.update(build(folder))
        feeds = feeds_for(model, folder)
        timed = {b: {r.model: r for r in bench_models([(v, str(p)) for v, p in paths.items()],
                                                      batch=b, repeats=args.rounds,
                                                      feeds=feeds, progress=False)}
                 for b in (1, 8)}
        fp32 = paths["fp32"]
        for variant, path in paths.items():
            b1, b8 = timed[1][variant], timed[8][variant]
            row = {"model": model, "variant": variant, "b1_ms": b1.median_ms,
                   "b8_ms": b8.median_ms, "b1_speedup": timed[1]["fp32"].median_ms / b1.median_ms,
                   "b8_speedup": timed[8]["fp32"].median_ms / b8.median_ms,
                   "size_pct": 100 * path.stat().st_size / fp32.stat().st_size,
                   "quality": quality(model, fp32, path, feeds)}
            rows.append(row)
            table.append(f"| {model} | {variant} | {row['b1_ms']:.2f} | {row['b1_speedup']:.2f}x "
                         f"| {row['b8_ms']:.1f} | {row['b8_speedup']:.2f}x | "
                         f"{row['size_pct']:.0f} | {row['quality']} |")
            print(table[-1], flush=True)
    print("\n".join(table))
    args.out.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=1))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
