"""Where a search's candidates are built: in this process, in local worker processes
(``workers=N``), or as Ray tasks on a cluster (``ray=ADDRESS``, or a local instance the
search starts). Each gives the :class:`~.candidate.Built` results in the order asked, so
the trials, and their numbers, do not depend on which ran them.

Local workers read the driver's files and write each candidate in place. Ray tasks may run
on other machines: the job (model, data, calibration file) goes into Ray's object store
once per search and each task returns its candidate's bytes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxpress.autotune.candidate import Built, Job, Shipped, build
from onnxpress.errors import BadInputError

__all__ = ["InProcess", "Processes", "RayTasks", "Workers", "ship", "workers_for"]

#: a task: the pipeline, and where a local worker writes its candidate
Task = tuple[str, str]


class Workers:
    """Runs picklable functions of this package: ``call`` returns their results in the
    order asked; ``map`` builds a search's candidates."""

    name = "this process"
    local = True  # whether the workers read and write the driver's disk

    def call(self, function: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        return [function(*args) for args in arguments]

    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        return self.call(build, [(job, pipeline, out) for pipeline, out in tasks])

    def close(self) -> None:
        pass

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess(Workers):
    pass


class Processes(Workers):
    """``count`` local processes (spawned: no state of the driver's is inherited)."""

    def __init__(self, count: int) -> None:
        self.name = f"{count} local processes"
        self.pool = concurrent.futures.ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"))

    def call(self, function: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        futures = [self.pool.submit(function, *args) for args in arguments]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayTasks(Workers):
    """Ray tasks of one CPU each, on the cluster at ``address`` (``None``: a local instance
    of ``cpus`` CPUs, started here and stopped by :meth:`close`). Arguments travel through
    Ray's object store; files go as :class:`Shipped` bytes."""

    local = False

    def __init__(self, address: str | None, cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BadInputError("--ray needs Ray: pip install 'onnxpress[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, num_cpus=None if address else cpus,
                     include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                     configure_logging=False)
        self.name = f"Ray at {address}" if address else f"a local Ray instance ({cpus} CPUs)"
        self.remotes: dict[Callable[..., Any], Any] = {}
        self.shipped: tuple[int, Any] | None = None

    def call(self, function: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        if function not in self.remotes:
            self.remotes[function] = self.ray.remote(num_cpus=1, max_retries=0)(function)
        remote = self.remotes[function]
        return self.ray.get([remote.remote(*args) for args in arguments])

    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        if self.shipped is None or self.shipped[0] != id(job):
            self.shipped = (id(job), self.ray.put(_shipped(job)))
        return self.call(build, [(self.shipped[1], pipeline, None) for pipeline, _ in tasks])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def workers_for(workers: int = 1, ray: str | bool | None = None) -> Workers:
    """``ray``: True or "" for a local instance of ``workers`` CPUs, an address for a
    cluster; else ``workers`` local processes (1: this process)."""
    if workers < 1:
        raise BadInputError(f"search: workers={workers}; give at least 1")
    if ray is not None and ray is not False:
        return RayTasks(ray if isinstance(ray, str) and ray else None, workers)
    return Processes(workers) if workers > 1 else InProcess()


def ship(file: str | Shipped | None) -> str | Shipped | None:
    """A file on the driver's disk as bytes for a remote worker (a name stays a name)."""
    if isinstance(file, str) and os.path.isfile(file):
        return Shipped.of(Path(file))
    return file


def _shipped(job: Job) -> Job:
    """The job with its files as bytes (a named data set stays a name)."""
    return Job(ship(job.model), ship(job.data), ship(job.calibration), job.budget,
               job.original)
