"""Run one benchmark suite: ``python -m benchmarks.run --suite NAME``.

Writes ``OUT/NAME.json`` (the schema in :mod:`benchmarks.core.results`), ``OUT/NAME.md``
(its tables) and, with matplotlib, ``OUT/NAME.png``; prints the tables. Exports and other
tools' files are cached in ``--cache`` (default ``OUT/cache``) and shared by the suites;
onnxpress's own outputs go to ``OUT/NAME/`` and are built again every run.

``--smoke`` runs the suite's smallest configuration (the digits models, one repeat, the
fewest variants that still take every code path): the tests run it for each suite.
``--set KEY=VALUE`` sets a suite's own option (``--list`` shows them). Exit status 1 when a
row fails a budget the suite checks (``passed: false``), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .core.cache import Cache
from .core.results import result, write_json
from .core.suite import Context, Suite
from .core.timing import SESSION
from .suites import (
    baseline,
    calibration_memory,
    cleanup,
    corpus,
    fold_qdq,
    fuse_for_ort,
    hashes,
    int8_cost,
    llm_compress,
    llm_decode,
    lowrank,
    ort_target,
    prune,
    prune_sparsity,
    quant,
    quant_headline,
    resource_cases,
    search,
    tome,
    weight_only,
)

HERE = Path(__file__).resolve().parent
SUITES: dict[str, Suite] = {
    "baseline": baseline.SUITE,
    "cleanup": cleanup.SUITE,
    "quant": quant.SUITE,
    "quant_headline": quant_headline.SUITE,
    "ort_target": ort_target.SUITE,
    "fold_qdq": fold_qdq.SUITE,
    "weight_only": weight_only.SUITE,
    "calibration_memory": calibration_memory.SUITE,
    "fuse_for_ort": fuse_for_ort.SUITE,
    "prune": prune.SUITE,
    "prune_sparsity": prune_sparsity.SUITE,
    "lowrank": lowrank.SUITE,
    "tome": tome.SUITE,
    "output_hashes": hashes.SUITE,
    "corpus": corpus.SUITE,
    "int8_cost": int8_cost.SUITE,
    "resource_cases": resource_cases.SUITE,
    "llm_decode": llm_decode.SUITE,
    "llm_compress": llm_compress.SUITE,
    "search": search.SUITE,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=tuple(SUITES))
    p.add_argument("--list", action="store_true", help="the suites, their models and options")
    p.add_argument("--models", help="comma-separated (default: the suite's)")
    p.add_argument("--variants", help="comma-separated (default: all of the suite's)")
    p.add_argument("--repeats", type=int, help="timed rounds (default: the suite's)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="baseline/quant without --repeats: timing budget per model (20)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    p.add_argument("--cache", type=Path, help="cache of exports (default OUT/cache)")
    p.add_argument("--fresh", action="store_true", help="rebuild what the cache holds")
    p.add_argument("--smoke", action="store_true", help="smallest run: digits models, 1 repeat")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a suite option (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print(listing())
        return 0
    if args.suite is None:
        p.error("--suite is required (see --list)")
    suite = SUITES[args.suite]
    ctx = context(suite, args, p)
    logging.getLogger().setLevel(logging.ERROR)  # the quantizers' per-tensor warnings
    started = time.perf_counter()
    data = result(suite.name, {
        "models": list(ctx.models), "variants": list(ctx.variants or suite.variants),
        "repeats": ctx.repeats, "seconds": ctx.seconds, "threads": ctx.threads,
        "smoke": ctx.smoke, "options": dict(ctx.options),
        "session": SESSION.format(threads=ctx.threads), "cache": str(ctx.cache.root)})
    path = args.out / f"{suite.name}.json"
    # model by model, the JSON rewritten after each: a long run that stops keeps its rows
    for part in [(m,) for m in ctx.models] if suite.per_model else [ctx.models]:
        data["rows"] += suite.measure(dataclasses.replace(ctx, models=part))
        data["wall_s"] = time.perf_counter() - started
        write_json(data, path)
    data["tables"] = suite.tables(data["rows"])
    write_json(data, path)
    text = "\n\n".join(f"## {title}\n\n{body}" for title, body in data["tables"].items())
    (args.out / f"{suite.name}.md").write_text(f"# {suite.name}\n\n{text}\n")
    print(f"\n{text}\n\nwrote {args.out / suite.name}.json, .md ({data['wall_s']:.0f} s)")
    if suite.plot is not None and not args.no_plot:
        print(suite.plot(data["rows"], args.out / f"{suite.name}.png"))
    return 1 if any(r.get("passed") is False for r in data["rows"]) else 0


def context(suite: Suite, args: argparse.Namespace, p: argparse.ArgumentParser) -> Context:
    known = suite.models + suite.smoke_models + suite.more_models
    models = _names(args.models, known, "model", p) or (
        suite.smoke_models if args.smoke else suite.models)
    if args.variants and not suite.variants:
        p.error(f"{suite.name} takes no --variants: it measures what its docstring lists")
    variants = _names(args.variants, suite.variants, "variant", p)
    if variants is None and args.smoke and suite.smoke_variants:
        variants = tuple(v for v in suite.smoke_variants if v in suite.variants)
    options = dict(suite.options, **(suite.smoke_options if args.smoke else {}))
    for item in args.set:
        key, _, text = item.partition("=")
        if key not in suite.options:
            p.error(f"{suite.name} has no option {key!r}; it has: {', '.join(suite.options)}")
        options[key] = _parse(text, suite.options[key])
    fixed = args.repeats or (1 if args.smoke else None)
    return Context(suite.name, models, variants, fixed or suite.repeats, args.threads,
                   args.smoke, Cache(args.cache or args.out / "cache", fresh=args.fresh),
                   args.out / suite.name, options,
                   seconds=None if fixed else args.seconds)


def _names(text: str | None, known: tuple[str, ...], what: str,
           p: argparse.ArgumentParser) -> tuple[str, ...] | None:
    if not text:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown {what} {unknown[0]!r}; known: {', '.join(dict.fromkeys(known))}")
    return names


def _parse(text: str, default: Any) -> Any:
    """A --set value, typed like the option's default."""
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        return tuple(t.strip() for t in text.split(",") if t.strip())
    return type(default)(text) if default is not None else text


def listing(suites: Mapping[str, Suite] = SUITES) -> str:
    lines = []
    for name, suite in suites.items():
        summary = " ".join(suite.doc.split("\n\n")[0].split()).removeprefix(f"``{name}``: ")
        lines.append(f"{name}: {summary[:100]}{'...' if len(summary) > 100 else ''}")
        lines.append(f"    models: {', '.join(suite.models)}; smoke: "
                     f"{', '.join(suite.smoke_models)}")
        if suite.options:
            lines.append(f"    options: {json.dumps(dict(suite.options), default=str)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
