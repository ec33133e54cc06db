"""One candidate's work, wherever it runs: compile the pipeline, judge the result against
the budget, and hand back the file (written in place, or as bytes for a remote driver).

A :class:`Job` holds everything a worker needs. Its files are either paths on this machine
(a local worker reads them) or :class:`Shipped` bytes (a Ray task on another node, which
writes them once per worker process into a folder of its own). Timing is not done here:
the driver times every candidate on one machine, one at a time, so that latencies are
comparable and undisturbed (:mod:`.trials`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onnxpress.api import compile
from onnxpress.autotune.budget import Budget
from onnxpress.autotune.judge import judge
from onnxpress.backends.onnx_writer import save
from onnxpress.errors import BadInputError

__all__ = ["Built", "Job", "Shipped", "build", "local_path"]

#: the distinct warnings a candidate's compile logged that its trial keeps
MAX_SAID = 5


@dataclasses.dataclass(frozen=True)
class Shipped:
    """A file's bytes and name, for a worker that cannot read the driver's disk."""

    name: str
    data: bytes

    @classmethod
    def of(cls, path: str | os.PathLike) -> Shipped:
        return cls(Path(path).name, Path(path).read_bytes())


File = str | Shipped


@dataclasses.dataclass(frozen=True)
class Job:
    model: File
    data: File  # a named data set stays a name
    calibration: File | None
    budget: Budget
    original: float  # the original model's metric on the data


@dataclasses.dataclass(frozen=True)
class Built:
    pipeline: str
    value: float | None = None  # the budget's metric
    holds: bool = False
    slack: float | None = None
    said: tuple[str, ...] = ()  # the compile's distinct warnings
    rejected: str | None = None  # the one-line reason it did not compile
    model: bytes | None = None  # the candidate, when the driver asked for bytes


def build(job: Job, pipeline: str, out: str | None) -> Built:
    """Compile ``pipeline`` on the job's model and judge it; write the candidate to ``out``
    (a path on the driver's disk), or return its bytes when ``out`` is None."""
    model, data, calibration = (local_path(f) for f in (job.model, job.data, job.calibration))
    said: list[str] = []
    with contextlib.ExitStack() as stack:
        path = out or os.path.join(stack.enter_context(tempfile.TemporaryDirectory()),
                                   "candidate.onnx")
        try:
            with _collected(said):
                save(compile(model, pipeline, calibration=calibration, progress=False), path)
        except BadInputError as error:
            return Built(pipeline, rejected=str(error).splitlines()[0])
        verdict = judge(job.budget, path, model, data, job.original)
        payload = None if out else Path(path).read_bytes()
    return Built(pipeline, verdict.value, verdict.holds, verdict.slack,
                 tuple(dict.fromkeys(said))[:MAX_SAID], None, payload)


_MATERIALIZED: dict[str, str] = {}


def local_path(file: File | None) -> str | None:
    """A path to ``file`` on this machine: shipped bytes are written once per process."""
    if file is None or isinstance(file, str):
        return file
    key = hashlib.sha256(file.data).hexdigest()
    if key not in _MATERIALIZED:
        folder = tempfile.mkdtemp(prefix="onnxpress-search-")
        path = os.path.join(folder, file.name)
        Path(path).write_bytes(file.data)
        _MATERIALIZED[key] = path
    return _MATERIALIZED[key]


class _Collector(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def _collected(into: list[str]) -> Iterator[None]:
    """The passes' warnings during one candidate's compile go to ``into`` (the trial's
    record), not to the console, where a search of many candidates would repeat them."""
    logger = logging.getLogger("onnxpress")
    handler, propagate = _Collector(into), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
