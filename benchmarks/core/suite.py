"""What a suite is (:class:`Suite`), what it is run with (:class:`Context`) and what its
rows look like.

A row is a plain dict (it goes to the JSON as it is) with at least ``model``, ``variant``
and ``status``: ``ok``; ``error`` with ``error`` (a step failed; the suite went on); or
``unavailable`` with ``reason`` (a peer tool that is not installed, say).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .cache import Cache

Row = dict[str, Any]


class Unavailable(RuntimeError):
    """A variant that cannot be built here (a peer tool is not installed): its row says why
    instead of failing."""


@dataclasses.dataclass(frozen=True)
class Context:
    """One run of one suite: what the command line chose."""

    suite: str
    models: tuple[str, ...]
    variants: tuple[str, ...] | None  # None: every variant the suite has
    repeats: int
    threads: int
    smoke: bool
    cache: Cache
    work: Path  # files built this run (onnxpress's variants: never cached, the code changes)
    options: Mapping[str, Any]
    seconds: float | None = None  # a timing budget per model where --repeats was not given

    def wants(self, variant: str) -> bool:
        return self.variants is None or variant in self.variants

    def folder(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclasses.dataclass(frozen=True)
class Suite:
    """A benchmark: the models it measures (and the few its ``--smoke`` run takes), its
    variants, ``measure`` (context -> rows), ``tables`` (rows -> title -> markdown) and an
    optional ``plot`` (rows, path -> what it did)."""

    name: str
    doc: str
    models: tuple[str, ...]
    smoke_models: tuple[str, ...]
    measure: Callable[[Context], list[Row]]
    tables: Callable[[list[Row]], dict[str, str]]
    variants: tuple[str, ...] = ()  # for --variants; empty: the suite takes no filter
    smoke_variants: tuple[str, ...] = ()  # --smoke's filter, where it needs one
    more_models: tuple[str, ...] = ()  # accepted by --models, not run by default
    per_model: bool = True  # measure may be called a model at a time (the JSON after each)
    plot: Callable[[list[Row], Path], str] | None = None
    repeats: int = 20  # timed rounds when --repeats is not given
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # --set KEY=VALUE
    smoke_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # --smoke's


def row(model: str, variant: str, **fields: Any) -> Row:
    return {"model": model, "variant": variant, "status": "ok", **fields}


def first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:limit] if text else ''}"


@contextmanager
def step(target: Row, what: str) -> Iterator[None]:
    """Run a step for ``target``: an :class:`Unavailable` marks it unavailable, any other
    failure marks it an error named after the step; the suite goes on either way."""
    try:
        yield
    except Unavailable as reason:
        target.update(status="unavailable", reason=str(reason))
    except Exception as error:  # noqa: BLE001 - any failure becomes the row's error
        target.update(status="error", error=f"{what}: {first_line(error)}")


def ok(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["status"] == "ok"]


def log(text: str) -> None:
    """Progress for the person running a benchmark (the CLI is the place that prints)."""
    print(text, flush=True)
