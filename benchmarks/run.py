"""Benchmark suites, each over every zoo model and the two digits models:

- ``baseline``: the models as exported and as ONNX Runtime's own optimizer and quantizers
  leave them - the numbers onnxpress's passes must beat;
- ``quant``: int8 post-training quantization, side by side: fp32, ORT's ``dynamic``,
  ``qdq-u8s8``, ``qdq-s8s8`` and ``qop-u8s8`` (QOperator), NVIDIA ModelOpt
  (``modelopt-int8``), Intel's onnx-neural-compressor (``inc-int8``) and onnxpress's int8
  preset (``onnxpress-int8``); see ``quant_variants.py``. Its table shows each variant's
  speed-up over fp32 at batch 1 and 8, size as % of fp32 and quality. A peer tool that is not
  installed (``pip install -e .[peers]``) or fails on a model leaves its reason in the cell.

    python benchmarks/run.py --suite baseline|quant [--models resnet18,digits_cnn]
        [--variants fp32,dynamic] [--repeats N | --seconds S] [--threads 2] [--fresh]

Baseline variants (``baseline_variants.py``):

- ``fp32``: the exported model, untouched;
- ``ort-opt``: the model ONNX Runtime saves after optimizing it offline at ORT_ENABLE_ALL
  (``optimized_model_filepath``; may hold contrib ops, and is meant for this machine);
- ``dynamic``: ``quantize_dynamic``, int8 (QInt8) weights, activations quantized at run time;
- ``qdq-u8s8`` / ``qdq-s8s8``: ``quantize_static``, QDQ format, QUInt8 / QInt8 activations,
  QInt8 per-channel weights, MinMax calibration.
  The quantized variants start from ``quant_pre_process``'s output (see the variants file).

How they are run - the same for every variant, so that the comparison is what a user gets:
ONNX Runtime CPU with its default graph optimization level, ORT_ENABLE_ALL, ``--threads``
intra-op threads (2), one inter-op thread, sequential execution (``baseline_probe.py``'s
``session_options``; the timing's ``Runner`` sets the same). So ``fp32`` already includes
ORT's online optimizations (timing it with them disabled would flatter every other variant),
and ``ort-opt`` is the offline file *optimized once more* when its session loads it. Were
ORT's optimizer idempotent, ort-opt would time like fp32 and differ only in load time, peak
memory and size; on the raw dynamo exports it is not: the first pass folds the
CastLike/Expand chains in front of BatchNormalization and Clip, and only the second fuses
them into the Convs and picks the NCHWc layout (mobilenet_v2: 52 BatchNormalization left
after one pass, none after two). ort-opt is thus "what ORT alone reaches".

Measured per model x variant:

- latency at batch 1 (median, p10, p90 ms) and throughput at batch 8 (samples/s at the
  median), with ``onnxpress.backends.bench``: warm-up, then rounds in which the model's
  variants run interleaved (A B C D E A B C D E ...). Rounds are adaptive: each model gets
  ``--seconds`` (35% batch 1, 65% batch 8; at least 5 / 3 rounds) unless ``--repeats`` fixes
  them; the rounds used are reported;
- file size (MB = 2**20 bytes);
- peak memory: the RSS high-water mark of a fresh child process that imports onnxruntime,
  creates the session and runs one batch of 8 (``baseline_probe.py``); ``load s`` is its
  session creation time;
- quality: the digits models' test accuracy (``onnxpress.evaluate(model, "digits")``);
  MiniLM's ``onnxpress.evaluate(model, "minilm-texts")`` metric where that data set exists;
  for every model, top-1 agreement and mean cosine of the first output against fp32 on 32
  seeded inputs (the random-weight zoo models' quality).

Exports and variant files are cached in ``--results``/SUITE/MODEL/ (``--fresh`` rebuilds);
the JSON goes to ``--results``/SUITE.json and the plot to ``--results``/SUITE.png. The quant
suite takes a model's export, and the files of the variants it shares with the baseline
suite, from ``--results``/baseline/MODEL/ when that holds them (hard links), so it does not
export again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: suite -> its variants (the first is the reference for ratios and agreement)
SUITES = {
    "baseline": ("fp32", "ort-opt", "dynamic", "qdq-u8s8", "qdq-s8s8"),
    "quant": ("fp32", "dynamic", "qdq-u8s8", "qdq-s8s8", "qop-u8s8", "modelopt-int8",
              "inc-int8", "onnxpress-int8"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=tuple(SUITES), default="baseline")
    parser.add_argument("--models", help="comma-separated (default: all)")
    parser.add_argument("--variants", help="comma-separated (default: all of the suite's)")
    parser.add_argument("--repeats", type=int, help="fixed timing rounds (default: adaptive)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timing budget per model when rounds are adaptive (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--fresh", action="store_true", help="export and build everything again")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="folder for the JSON, the plot and the cache")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    from baseline_export import MODELS
    from baseline_report import plot, print_table, write_json
    from baseline_suite import SuiteOptions, run_suite
    from quant_variants import link_baseline_cache  # registers the quant suite's variants

    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)  # the quantizers' per-tensor warnings
    models = _pick(args.models, MODELS, "model", parser)
    variants = _pick(args.variants, SUITES[args.suite], "variant", parser)
    if "fp32" not in variants:
        variants.insert(0, "fp32")  # the reference for ratios and agreement
    if args.suite != "baseline" and not args.fresh:
        reused = [m for m in models if link_baseline_cache(args.results / "baseline" / m,
                                                           args.results / args.suite / m)]
        if reused:
            print(f"reused the baseline suite's exports of {', '.join(reused)}")
    start = time.perf_counter()
    options = SuiteOptions(models, variants, args.results / args.suite,
                           args.results / f"{args.suite}.json", threads=args.threads,
                           seconds=args.seconds, repeats=args.repeats, fresh=args.fresh)
    results = run_suite(options)
    results["config"]["suite"] = args.suite
    write_json(results, options.json_path)
    print()
    print_table(results)
    print(f"\nwrote {options.json_path}")
    if not args.no_plot:
        print(plot(results, args.results / f"{args.suite}.png"))
    print(f"suite wall time {time.perf_counter() - start:.0f}s")
    return 0


def _pick(text: str | None, known: tuple[str, ...], what: str,
          parser: argparse.ArgumentParser) -> list[str]:
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown[0]!r}; known: {', '.join(known)}")
    return names


if __name__ == "__main__":
    sys.exit(main())
