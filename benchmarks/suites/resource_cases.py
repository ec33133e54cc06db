"""``resource_cases``: peak memory and time of ``onnxpress compile`` on tiny models that ask
for huge values (issue 22, R1 and R2), and on a long chain of nodes.

Each case of :mod:`onnxpress.models.resource_cases` (an Expand, Tile, Range or
ConstantOfShape whose result would take 0.8 to 16 GiB, two of them read by an op that
ONNX's data propagation would spell out) is compiled by the CLI in a fresh child process
with each pipeline: the default, ``fuse-for-ort`` alone and ``cleanup,fuse-for-ort``. A row
gives the child's peak RSS (imports included), the seconds of the compile, the output's ops
(the huge node stays for the runtime to compute; the Shape of a Range folds from dims
alone) and how many notes say why; it passes under 500 MB with exit 0. ``chain`` is
``--set chain=N`` nodes (100,000 by default) of Add and Relu, compiled with the default
pipeline: compile time should grow linearly with N (no budget; its peak is reported, not
judged).

    python -m benchmarks.run --suite resource_cases [--set chain=20000]

``--smoke``: one Expand, the Range shape case and a 2,000-node chain.
"""

from __future__ import annotations

import time
from typing import Any

from onnxpress.models.resource_cases import CASES

from ..core.child import run_child
from ..core.suite import Context, Row, Suite, log, row, step
from ..core.tables import table

LIMIT_MB = 500
#: variant -> the --passes given (None: the default pipeline)
PIPELINES = {"default": None, "fuse-for-ort": "fuse-for-ort",
             "cleanup+fuse-for-ort": "cleanup,fuse-for-ort"}


def measure(ctx: Context) -> list[Row]:
    rows = []
    for model in ctx.models:
        variants = ("default",) if model == "chain" else tuple(PIPELINES)
        for variant in variants:
            if not ctx.wants(variant):
                continue
            r = row(model, variant, limit_mb=LIMIT_MB)
            with step(r, "compile"):
                length = ctx.options["chain"] if model == "chain" else 0
                said = run_child(compile_case, timeout=3600, name=model, length=length,
                                 passes=PIPELINES[variant], folder=str(ctx.folder(model)))
                r.update(said["value"], peak_rss_mb=round(said["peak_rss_mb"], 1))
                if model != "chain":
                    r["passed"] = r["peak_rss_mb"] < LIMIT_MB and r["exit"] == 0
                log(f"{model} {variant}: {r['peak_rss_mb']:.0f} MB, {r['compile_s']:.2f} s")
            rows.append(r)
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        verdict = "-" if "passed" not in r else "yes" if r["passed"] else "NO"
        return (f"{r['nodes_in']} -> {r['nodes_out']}", r["ops_out"], str(r["notes"]),
                str(r["exit"]), f"{r['peak_rss_mb']:.0f}", f"{r['compile_s']:.2f}", verdict)

    header = ("case", "pipeline", "nodes", "output ops", "size notes", "exit", "peak RSS MB",
              "compile s", f"ok (< {LIMIT_MB} MB)")
    return {"compile of resource cases (a fresh process each)": table(header, rows, cells)}


# --- the child process -------------------------------------------------------------------

def compile_case(name: str, length: int, passes: str | None, folder: str) -> dict[str, Any]:
    import contextlib
    import io
    from pathlib import Path

    import onnx

    from onnxpress.cli import main
    from onnxpress.models.resource_cases import chain

    case = next((c for c in CASES if c.name == name), None)
    model = chain(length) if case is None else case.build()
    source, output = Path(folder) / f"{name}.onnx", Path(folder) / f"{name}.out.onnx"
    onnx.save(model, source)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = main(["compile", str(source), "-o", str(output),
                     *(["--passes", passes] if passes else [])])
    seconds = time.perf_counter() - start
    ops = [node.op_type for node in onnx.load(output).graph.node] if output.exists() else []
    lines = printed.getvalue().splitlines()
    return {"exit": code, "compile_s": round(seconds, 3), "nodes_in": len(model.graph.node),
            "nodes_out": len(ops), "ops_out": ",".join(sorted(set(ops))),
            "notes": sum("left unfolded" in x or "without data propagation" in x
                         for x in lines)}


SUITE = Suite("resource_cases", __doc__, models=(*(c.name for c in CASES), "chain"),
              smoke_models=("expand_20000x20000", "range_int64_2e8_shape", "chain"),
              variants=tuple(PIPELINES), measure=measure, tables=tables,
              options={"chain": 100_000}, smoke_options={"chain": 2_000})
