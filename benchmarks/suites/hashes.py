"""``output_hashes``: the hashes of the files every preset and target pipeline writes
(``benchmarks/output_hashes.py``, which also runs on its own), as a suite: each pipeline
runs ``--set runs=2`` times per model, and a row says whether the runs wrote the same bytes
(the same input and config must give the same bytes) and, with ``--set compare=FILE`` (an
earlier ``output_hashes.py -o`` file, or this suite's ``OUT/output_hashes/hashes.json``),
whether the bytes are those of that earlier run, i.e. that a refactoring changed no byte.
A pipeline that refuses a model is a row with its one-line reason, compared too.

    python -m benchmarks.run --suite output_hashes [--set compare=before.json]

``--smoke``: the digits models, the pipelines that take seconds on them (not the
activation-aware ``lowrank`` nor ``prune-mlp``), twice.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from .. import output_hashes
from ..core.suite import Context, Row, Suite, log, row
from ..core.tables import table


def measure(ctx: Context) -> list[Row]:
    pipelines = [p for p in output_hashes.PIPELINES if ctx.wants(p)]
    runs = []
    for run in range(max(ctx.options["runs"], 1)):
        out = ctx.folder() / ("hashes.json" if run == 0 else f"hashes.{run}.json")
        argv = ["--models-dir", str(ctx.cache.root / "output_hashes"), "-o", str(out),
                "--models", ",".join(ctx.models), "--pipelines", ",".join(pipelines)]
        with contextlib.redirect_stdout(io.StringIO()) as said:
            output_hashes.main(argv)
        log(said.getvalue().rstrip())
        runs.append(json.loads(out.read_text()))
    before = json.loads(Path(ctx.options["compare"]).read_text()) if ctx.options["compare"] else {}
    rows = []
    for model, found in runs[0].items():
        for pipeline, digest in found.items():
            refused = digest.startswith("error: ")
            r = row(model, pipeline, sha256=None if refused else digest,
                    refused=digest.removeprefix("error: ") if refused else None,
                    same_in_every_run=all(other.get(model, {}).get(pipeline) == digest
                                          for other in runs))
            if before:  # as output_hashes.py compares: a logged refusal keeps 64 characters
                earlier = before.get(model, {}).get(pipeline) or ""
                r["same_as_before"] = earlier[:64] == digest[:64]
            rows.append(r)
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        before = r.get("same_as_before")
        return ((r["sha256"] or "")[:16] or f"refused: {r['refused']}",
                "yes" if r["same_in_every_run"] else "NO",
                "-" if before is None else ("yes" if before else "CHANGED"))

    header = ("model", "pipeline", "sha256 (first 16) or refusal", "same every run",
              "same as before")
    return {"output hashes": table(header, rows, cells)}


SUITE = Suite("output_hashes", __doc__, models=output_hashes.MODEL_NAMES,
              smoke_models=("digits_cnn", "digits_vit"), measure=measure, tables=tables,
              variants=tuple(output_hashes.PIPELINES), options={"runs": 2, "compare": ""},
              smoke_variants=("int8-qoperator", "tensorrt", "weight-only", "prune", "tome"),
              per_model=False)  # one hashes.json for every model, as output_hashes.py writes
