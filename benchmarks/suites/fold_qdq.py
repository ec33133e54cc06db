"""``fold_qdq``: the ``fold-qdq`` pass on ResNet-18 as other tools quantize it (see
:mod:`.fold_qdq_inputs`): file size, ONNX Runtime latency and bit identity, before and after.

Each input goes through ``fold-qdq``; ``ort-qdq-default`` also through
``fold-qdq(int8_moves=true)``, and ``qat-dynamo`` through ``cleanup,fold-qdq``
(torch.export leaves the BN-scaled QAT weights as Mul nodes, constants only once folded).
Latency: before and after interleaved round by round (:mod:`benchmarks.core.timing`),
medians at batch 1 and 8 (``no load``: the input does not load at ORT's default level).
``bit-identical``: every output equal (``np.array_equal``) on 8 seeded images, with ORT's
optimisations off, and at the default level (``*``: the input does not load there; compared
with it at ORT_ENABLE_BASIC). ``ORT graph``: which op counts differ between the graphs ORT
runs at its default level (``same``: any latency difference is noise). Sizes count external
data files. On a small shared machine ``--threads 1 --repeats 30`` gives steadier medians.

    python -m benchmarks.run --suite fold_qdq [--repeats 10] [--threads 2]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import onnxpress
from onnxpress.errors import BadInputError

from ..core.graphs import file_size, op_count, ort_graph
from ..core.suite import Context, Row, Suite, log, row, step
from ..core.tables import mb, table
from ..core.timing import time_variants
from .fold_qdq_inputs import INPUTS, SOURCES, Source, images, prepare

#: (input, pipeline): fold-qdq on each; also int8_moves=true where activations are int8;
#: cleanup first where torch.export left the BN-scaled QAT weights as Mul nodes
PIPELINES = (("ort-qdq-u8s8-pc", "fold-qdq"), ("ort-qdq-default", "fold-qdq"),
             ("ort-qdq-default", "fold-qdq(int8_moves=true)"),
             ("qat-torchscript", "fold-qdq"), ("qat-dynamo", "fold-qdq"),
             ("qat-dynamo", "cleanup,fold-qdq"))
LEVEL = ort.GraphOptimizationLevel


def measure(ctx: Context) -> list[Row]:
    rows = []
    for model in ctx.models:
        source = SOURCES[model]
        wanted = tuple(name for name in INPUTS if ctx.wants(name))
        files: dict[str, dict[int, Path]] = {}
        for name in wanted:
            failed = row(model, name, passes="-")
            with step(failed, "build"):
                files.update(prepare(source, ctx, (name,)))
            if failed["status"] != "ok":
                rows.append(failed)
        for name, passes in PIPELINES:
            if name in files:
                rows.append(_measure(source, name, passes, files[name], ctx))
    return rows


def _measure(source: Source, name: str, passes: str, files: dict[int, Path],
             ctx: Context) -> Row:
    r = row(source.model, name, passes=passes)
    with step(r, "fold"):
        folded = {path: _fold(path, passes, ctx) for path in set(files.values())}
        before, (after, stats) = files[8], folded[files[8]]
        r.update(stats=stats, size_before=file_size(before), size_after=file_size(after),
                 q_before=op_count(before, "QuantizeLinear"),
                 q_after=op_count(after, "QuantizeLinear"),
                 identical=_identical(before, after, source),
                 ort_graph=_graph_change(before, after))
        for batch, path in files.items():
            r[f"ms_b{batch}"] = _latency(path, folded[path][0], batch, source, ctx)
        log(f"{name} | {passes}: {stats}")
    return r


def _fold(source: Path, passes: str, ctx: Context) -> tuple[Path, dict[str, Any]]:
    """``passes`` over ``source`` (verify() after each), saved with every weight inside the
    file (the writer would otherwise keep pointing at the input's external data file)."""
    import onnx_ir as ir

    target = ctx.folder("fold_qdq") / f"{source.stem}.{passes.replace(',', '+')}.onnx"
    model, report = onnxpress.compile(source, passes, return_report=True, progress=False)
    ir.external_data.load_to_model(model)
    onnxpress.save(model, target)
    onnx.checker.check_model(str(target), full_check=True)
    return target, {k: v for record in report.passes for k, v in record.stats.items() if v}


def _outputs(path: Path, level: Any, source: Source, feed: np.ndarray) -> list | str:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ORT raises its own classes on load
        return str(error).splitlines()[0]
    return session.run(None, {source.input: feed})


def _identical(before: Path, after: Path, source: Source) -> dict[str, str]:
    """``yes``/``NO`` with ORT's optimisations off, and at its default level; where the input
    does not load at the default level, against the input at ORT_ENABLE_BASIC (``yes*``)."""
    feed, verdicts = images(source, 8, 3), {}
    for label, level in (("unoptimised", LEVEL.ORT_DISABLE_ALL), ("default", LEVEL.ORT_ENABLE_ALL)):
        a, b = _outputs(before, level, source, feed), _outputs(after, level, source, feed)
        mark = ""
        if isinstance(a, str) and label == "default":
            a, mark = _outputs(before, LEVEL.ORT_ENABLE_BASIC, source, feed), "*"
        if isinstance(a, str) or isinstance(b, str):
            verdicts[label] = "-"
            continue
        same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        verdicts[label] = ("yes" if same else "NO") + mark
    return verdicts


def _graph_change(before: Path, after: Path) -> str:
    a, b = ort_graph(before), ort_graph(after)
    if a is None or b is None:
        return "-"
    changed = [f"{op} {a[op]}->{b[op]}" for op in sorted(set(a) | set(b)) if a[op] != b[op]]
    return ", ".join(changed) or "same"


def _latency(before: Path, after: Path, batch: int, source: Source,
             ctx: Context) -> list[float | None]:
    feeds = {source.input: images(source, batch, 2)}
    try:
        timed = time_variants({"before": before, "after": after}, feeds, batch=batch,
                              repeats=ctx.repeats, threads=ctx.threads)
        return [timed["before"]["median_ms"], timed["after"]["median_ms"]]
    except BadInputError:  # the input does not load at the default level
        timed = time_variants({"after": after}, feeds, batch=batch, repeats=ctx.repeats,
                              threads=ctx.threads)
        return [None, timed["after"]["median_ms"]]


def tables(rows: list[Row]) -> dict[str, str]:
    def ms(values: list[float | None]) -> str:
        return " -> ".join("no load" if v is None else f"{v:.2f}" for v in values)

    def cells(r: Row) -> tuple[str, ...]:
        return (f"{mb(r['size_before'])} -> {mb(r['size_after'])}",
                f"{r['q_before']} -> {r['q_after']}", ms(r["ms_b1"]), ms(r["ms_b8"]),
                "/".join(r["identical"].values()), r["ort_graph"])

    header = ("model", "input", "passes", "size MB before->after", "Q nodes",
              "b1 ms before->after", "b8 ms before->after", "bit-identical", "ORT graph")
    title = ("fold-qdq before -> after (bit-identical: unoptimised/default level; *: the input "
             "does not load at the default level, compared at ORT_ENABLE_BASIC)")
    return {title: table(header, rows, cells, names=("model", "variant", "passes"))}


SUITE = Suite("fold_qdq", __doc__, models=("resnet18",), smoke_models=("digits_cnn",),
              measure=measure, tables=tables, variants=INPUTS, repeats=10)
