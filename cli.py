"""The command line: argument parsing and printing only; every command calls the API.

Exit codes: 0 success, 1 a requested check or budget failed, 2 bad input or usage, 3 a bug
of ours ("internal error", naming the pass where a pass broke the model); each failure is
one line on stderr (the traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from onnxpress.console import (
    Stopped,
    configure_logging,
    one_line,
    quiet_libraries,
    signals_as_exceptions,
)
from onnxpress.errors import BadInputError, InternalError, OnnxpressError

PROG = "onnxpress"
#: what `onnxpress compile` with no model and no pipeline runs on the embedded model
DEFAULT_PRESET = "compress"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="ONNX graph-rewriting compiler")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what passes do")
    commands = parser.add_subparsers(dest="command", required=True)

    comp = commands.add_parser("compile", help="run a pass pipeline on a model")
    comp.add_argument("model", nargs="?", help="input .onnx (default: the embedded digits "
                      "CNN, compressed with the 'compress' preset and measured against itself)")
    comp.add_argument("-o", "--output", required=True, help="output .onnx (never the input)")
    comp.add_argument("--passes", help='pipeline, e.g. "cleanup,fold-constants"')
    comp.add_argument("--config", help="TOML config file with the pipeline and options")
    comp.add_argument("--calibration", help=".npz file or folder of them")
    comp.add_argument("--report", help="write the JSON report here")
    comp.add_argument("--check", action="store_true",
                      help="compare outputs with the input model's; exit 1 if they differ")
    comp.add_argument("--tolerance", type=float, default=1e-4,
                      help="relative output error --check accepts, times the output's "
                      "largest magnitude (default 1e-4)")
    comp.add_argument("--atol", type=float, default=1e-6,
                      help="absolute output error --check accepts on top (default 1e-6)")
    _input_options(comp)
    comp.add_argument("--target", help="the runtime to tune for, one of the registry's "
                      "targets (ort-cpu, the default; tensorrt); picks the default pipeline")
    comp.add_argument("--opset", type=int, help="convert to this opset before the passes")
    comp.add_argument("--keep-initializer-inputs", action="store_true",
                      help="keep initializers that are also graph inputs overridable")
    comp.add_argument("--no-verify", action="store_true", help="skip IR checks between passes")
    comp.add_argument("--ort-optimized", metavar="PATH",
                      help="also save the model as ONNX Runtime optimises it (--ort-level)")
    comp.add_argument("--ort-level", choices=["basic", "extended", "all"], default="extended",
                      help="ORT optimisation level for --ort-optimized (all: this machine only)")
    comp.add_argument("--engine", metavar="PATH",
                      help="with --target tensorrt: build a TensorRT engine and compare it "
                           "with ONNX Runtime (needs the tensorrt package and a GPU)")

    insp = commands.add_parser("inspect", help="ops, parameters, size, opsets, inputs/outputs")
    insp.add_argument("model")
    insp.add_argument("--json", action="store_true", help="print JSON")

    cmp_ = commands.add_parser("compare", help="compare two models' outputs")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.add_argument("--data", help="named data set, .npz file or folder (default: random inputs)")
    cmp_.add_argument("--json", action="store_true", help="print JSON")
    _input_options(cmp_)
    cmp_.add_argument("--provider", help="ONNX Runtime execution providers, e.g. cuda (CPU "
                      "is the fallback)")

    ev = commands.add_parser("evaluate", help="the model's metric on a data set (last line)")
    ev.add_argument("model")
    ev.add_argument("--data", required=True,
                    help="digits, digits-shifted, minilm-texts, or a .npz with inputs and "
                    "'label' or 'reference'")
    ev.add_argument("--batch", type=int, default=64)

    ben = commands.add_parser("bench", help="latency/throughput on ONNX Runtime CPU")
    ben.add_argument("models", nargs="+")
    ben.add_argument("--threads", type=int, default=2)
    ben.add_argument("--batch", type=int, default=1)
    ben.add_argument("--repeats", type=int, default=20)
    ben.add_argument("--json", action="store_true", help="print JSON")
    _input_options(ben)
    ben.add_argument("--provider", help="ONNX Runtime execution providers, e.g. cuda (CPU "
                     "is the fallback)")

    many = commands.add_parser("compile-many", help="one pipeline over many models, in local "
                               "processes or on a Ray cluster")
    many.add_argument("models", nargs="+")
    many.add_argument("-o", "--out-dir", required=True,
                      help="an existing folder; each model goes to <its name>.onnx there")
    many.add_argument("--passes", help="the pipeline (default: the target's)")
    many.add_argument("--calibration", help=".npz for the passes that calibrate")
    many.add_argument("--workers", type=int, default=1, help="local processes")
    many.add_argument("--ray", nargs="?", const=True, metavar="ADDRESS",
                      help="compile as Ray tasks on the cluster at ADDRESS (no address: a "
                      "local instance of --workers CPUs)")

    sea = commands.add_parser("search", help="the fastest (or smallest) pipeline across the "
                              "pass families within an accuracy budget")
    sea.add_argument("model")
    sea.add_argument("--data", required=True, help="the data set the budget is measured on")
    sea.add_argument("--budget", required=True,
                     help='e.g. "top1>=-1pt", "spearman>=0.99", "perplexity<=+5%%", '
                     '"cosine>=0.995"')
    sea.add_argument("--objective", choices=["latency", "size"], default="latency")
    sea.add_argument("--batch", type=int, default=8, help="batch the latency is timed at")
    sea.add_argument("--trials", type=int, default=24)
    sea.add_argument("--seed", type=int, default=0)
    sea.add_argument("--calibration", help=".npz for the passes that calibrate (int8, prune)")
    sea.add_argument("--report", required=True, metavar="DIR",
                     help="folder of the trials (rerun with it to resume) and front.json")
    sea.add_argument("-o", "--output", help="write the chosen model here")
    _input_options(sea)
    sea.add_argument("--test", help="a data set the search never looks at, on which the "
                     "original and the chosen model are scored at the end")
    sea.add_argument("--workers", type=int, default=1,
                     help="local processes that build candidates (timing stays one at a time)")
    sea.add_argument("--ray", nargs="?", const=True, metavar="ADDRESS",
                     help="build candidates as Ray tasks on the cluster at ADDRESS (no "
                     "address: a local instance of --workers CPUs)")
    return parser


def _input_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                         help="the shape of an input's random data, e.g. images=1,3,640,640")
    command.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                         help="a symbolic dim's length in random data, e.g. batch=1")


def _shapes(given: Sequence[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for text in given:
        name, _, dims = text.rpartition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise BadInputError(f"--input-shape {text!r}: write NAME=D,D,... with whole "
                                "numbers, e.g. images=1,3,640,640") from None
        if not name or any(d < 0 for d in shapes[name]):
            raise BadInputError(f"--input-shape {text!r}: write NAME=D,D,... with whole "
                                "numbers, e.g. images=1,3,640,640")
    return shapes


def _dim_values(given: Sequence[str]) -> dict[str, int]:
    dims = {}
    for text in given:
        name, _, value = text.rpartition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise BadInputError(f"--dim {text!r}: write NAME=N with N >= 1, e.g. batch=1")
        dims[name] = int(value)
    return dims


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    held = configure_logging(verbose=args.verbose, debug=args.debug)
    code = _run(args)
    if held is not None and code == 0:
        held.show()
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        with signals_as_exceptions(), quiet_libraries(args.debug):
            return _COMMANDS[args.command](args)
    except OnnxpressError as error:
        if args.debug:
            raise
        kind = "internal error" if isinstance(error, InternalError) else "error"
        _fail(f"{kind}: {error}")
        return error.exit_code
    except (KeyboardInterrupt, Stopped) as stop:
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
        _fail(f"stopped by {signal.Signals(signum).name}; temporary files removed, no "
              "output left half-written")
        return 128 + signum
    except Exception as error:  # the last line of defence: a bug of ours, one line, exit 3
        if args.debug:
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        _fail(f"internal error: {type(error).__name__}: {first} "
              "(rerun with --debug for the traceback)")
        return InternalError.exit_code


def _fail(message: str) -> None:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)


def _compile(args: argparse.Namespace) -> int:
    import onnxpress
    from onnxpress.api import job_inputs
    from onnxpress.backends.files import scratch_in, writable
    from onnxpress.backends.onnx_writer import save
    from onnxpress.models import default_model_path
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    source = Path(args.model) if args.model else default_model_path()
    passes, calibration = args.passes, args.calibration
    if args.model is None:  # the embedded model: compressed, and measured against itself
        calibration = calibration or str(CALIBRATION_NPZ)
        if passes is None and args.config is None and args.target is None:
            passes = DEFAULT_PRESET
    # every output checked before any work: none over a file the job reads, none through a
    # link or onto a FIFO or device (backends/files.py)
    reading = job_inputs(source, calibration, args.config)
    output = writable(args.output, reading=reading)
    sidecar = output.with_name(output.name + ".data")
    if sidecar.exists() or sidecar.is_symlink():
        writable(sidecar, reading=reading, what="external data")
    for extra, what in ((args.report, "report"), (args.ort_optimized, "optimised model"),
                        (args.engine, "engine")):
        if extra:
            writable(extra, reading=[*reading, output], what=what)
    with scratch_in(output.parent):  # a large model's temporary copies: the job's folder
        model, report = onnxpress.compile(
            source, passes, opset=args.opset, config=args.config, target=args.target,
            keep_initializer_inputs=args.keep_initializer_inputs,
            calibration=calibration, report=args.report, check=args.check,
            tolerance=args.tolerance, atol=args.atol, verify=not args.no_verify,
            input_shapes=_shapes(args.input_shape), dims=_dim_values(args.dim),
            return_report=True,
        )
    save(model, output, reading=reading)
    print(f"{source} -> {output}")
    for line in report.lines():
        print(line)
    if args.ort_optimized:
        from onnxpress.backends.ort_optimize import save_optimized

        saved = save_optimized(output, args.ort_optimized, level=args.ort_level,
                               reading=[*reading, output])
        print(f"ONNX Runtime's {args.ort_level}-optimised model -> {saved}")
    if args.engine:
        _engine(output, Path(args.engine), args)
    if args.model is None:
        _against_the_original(source, output, report.pipeline)
    return 0


def _against_the_original(source: Path, output: Path, pipeline: str) -> None:
    """What compiling the embedded digits CNN bought: accuracy on its 450 test digits,
    size, and latency measured interleaved against the original."""
    import onnxpress

    before, after = (onnxpress.evaluate(p, "digits").value for p in (source, output))
    sizes = [p.stat().st_size for p in (source, output)]
    timings = []
    for batch in (1, 64):
        rows = onnxpress.bench([source, output], batch=batch, repeats=30, progress=False)
        timings.append(f"batch {batch} {rows[0]['median_ms']:.3f} -> "
                       f"{rows[1]['median_ms']:.3f} ms "
                       f"({rows[0]['median_ms'] / rows[1]['median_ms']:.2f}x)")
    print(f"the embedded digits CNN, compiled with {pipeline}:")
    print(f"  top-1 on its 450 test digits: {before:.2%} -> {after:.2%}")
    print(f"  size: {sizes[0] / 1024:.0f} KB -> {sizes[1] / 1024:.0f} KB "
          f"({sizes[0] / sizes[1]:.1f}x smaller)")
    print(f"  latency (medians of 30 interleaved runs, 2 threads): {'; '.join(timings)}")


def _engine(model: Path, engine: Path, args: argparse.Namespace) -> None:
    """The TensorRT build step: an engine and its agreement with ONNX Runtime, or one line
    saying why it was skipped (compiling still succeeded)."""
    import onnxpress
    from onnxpress.backends.inputs import ModelInputs
    from onnxpress.backends.tensorrt_engine import engine_report, unavailable

    if args.target != "tensorrt":
        raise BadInputError("--engine builds TensorRT engines: add --target tensorrt")
    reason = unavailable()
    if reason is not None:
        print(f"TensorRT engine build skipped: {reason}")
        return
    feeds = ModelInputs.of(onnxpress.load(model)).random(seed=0)
    report = engine_report(model, engine, feeds)
    print(f"TensorRT {report.precision} engine -> {engine} (built in {report.build_s:.1f} s, "
          f"{report.latency_ms:.3f} ms)")
    for row in report.agreement:
        print(f"  {row['output']}: max|diff| {row['max_abs']:.4g}, cosine {row['cosine']:.6f}")


def _inspect(args: argparse.Namespace) -> int:
    import onnxpress

    info = onnxpress.inspect(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: IR {info['ir_version']}, opsets {info['opsets']}, "
          f"producer {info['producer'] or '?'}")
    print(f"nodes {info['nodes']}, parameters {info['parameters']:,}, "
          f"weights {info['weight_bytes'] / 2**20:.2f} MiB")
    for kind in ("inputs", "outputs"):
        for value in info[kind]:
            print(f"{kind[:-1]:<7}{value['name']}: {value['dtype']} {value['shape']}")
    print("ops: " + ", ".join(f"{op} {n}" for op, n in info["ops"].items()))
    return 0


def _compare(args: argparse.Namespace) -> int:
    import onnxpress

    rows = onnxpress.compare(args.a, args.b, args.data, provider=args.provider,
                             input_shapes=_shapes(args.input_shape), dims=_dim_values(args.dim))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'output':<24}{'max|diff|':>12}{'cosine':>12}{'top-1 agree':>13}")
    for row in rows:
        top1 = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.4f}"
        print(f"{row['output']:<24}{row['max_abs']:>12.4g}{row['cosine']:>12.6f}{top1:>13}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import onnxpress

    rows = onnxpress.bench(args.models, threads=args.threads, batch=args.batch,
                           repeats=args.repeats, provider=args.provider,
                           input_shapes=_shapes(args.input_shape), dims=_dim_values(args.dim))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<40}{'median ms':>11}{'p10':>9}{'p90':>9}{'samples/s':>11}")
    for row in rows:
        print(f"{row['model']:<40}{row['median_ms']:>11.3f}{row['p10_ms']:>9.3f}"
              f"{row['p90_ms']:>9.3f}{row['throughput']:>11.1f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import onnxpress

    result = onnxpress.evaluate(args.model, args.data, batch_size=args.batch)
    print(f"{args.model} on {result.data} ({result.samples} samples)")
    for name, value in result.metrics.items():
        if name != result.metric:
            print(f"{name} {value:.4f}")
    print(f"{result.metric} {result.value:.4f}")  # last, so that scripts can take the last line
    return 0


def _compile_many(args: argparse.Namespace) -> int:
    from onnxpress.autotune.fleet import compile_many

    results = compile_many(args.models, args.passes, args.out_dir,
                           calibration=args.calibration, workers=args.workers, ray=args.ray)
    for done in results:
        if done.refused is None:
            print(f"{done.model} -> {done.output}")
        else:
            named = done.model in done.refused  # a load error names the file already
            _fail(done.refused if named else f"{done.model}: {done.refused}")
    refused = sum(done.refused is not None for done in results)
    print(f"{len(results) - refused} of {len(results)} models compiled")
    return 2 if refused else 0


def _search(args: argparse.Namespace) -> int:
    import onnxpress

    result = onnxpress.search(args.model, args.data, args.budget, folder=args.report,
                              objective=args.objective, trials=args.trials, seed=args.seed,
                              calibration=args.calibration, batch=args.batch,
                              output=args.output, workers=args.workers, ray=args.ray,
                              test=args.test, input_shapes=_shapes(args.input_shape),
                              dims=_dim_values(args.dim))
    print(f"{args.model}: {result.budget} (original {result.original:.4f}), "
          f"{len(result.candidates)} trials, {args.objective} relative to the original")
    print(f"{'trial':>5}  {'cost':>6}  {'metric':>8}  pipeline")
    for c in result.front:
        print(f"{c.number:>5}  {c.cost:>6.3f}  {c.value:>8.4f}  {c.pipeline}")
    for note in result.notes:
        print(f"note: {note}")
    if result.chosen is None:
        _fail(f"no candidate within the budget {result.budget} in {len(result.candidates)} "
              "trials")
        return 1
    print(f"chosen: {result.chosen.pipeline}")
    if result.test is not None:
        print(f"on {result.test['data']}: original {result.test['original']:.4f}, chosen "
              f"{result.test['chosen']:.4f}")
    print(f"report: {Path(args.report) / 'report.html'}")
    return 0


_COMMANDS = {
    "compile": _compile,
    "inspect": _inspect,
    "compare": _compare,
    "evaluate": _evaluate,
    "bench": _bench,
    "compile-many": _compile_many,
    "search": _search,
}
