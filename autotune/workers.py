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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxpress.autotune.candidate import Built, Job, Shipped, build
from onnxpress.errors import BadInputError

__all__ = ["InProcess", "Processes", "RayTasks", "Workers", "workers_for"]

#: a task: the pipeline, and where a local worker writes its candidate
Task = tuple[str, str]


class Workers:
    """Builds candidates; ``map`` returns one :class:`Built` per task, in order."""

    name = "this process"

    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess(Workers):
    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        return [build(job, pipeline, out) for pipeline, out in tasks]


class Processes(Workers):
    """``count`` local processes (spawned: no state of the driver's is inherited)."""

    def __init__(self, count: int) -> None:
        self.name = f"{count} local processes"
        self.pool = concurrent.futures.ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"))

    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        futures = [self.pool.submit(build, job, pipeline, out) for pipeline, out in tasks]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayTasks(Workers):
    """Ray tasks of one CPU each, on the cluster at ``address`` (``None``: a local instance
    of ``cpus`` CPUs, started here and stopped by :meth:`close`)."""

    def __init__(self, address: str | None, cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BadInputError("search --ray needs Ray: pip install 'onnxpress[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, num_cpus=None if address else cpus,
                     include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                     configure_logging=False)
        self.name = f"Ray at {address}" if address else f"a local Ray instance ({cpus} CPUs)"
        self.remote = ray.remote(num_cpus=1, max_retries=0)(build)
        self.shipped: tuple[int, Any] | None = None

    def map(self, job: Job, tasks: Sequence[Task]) -> list[Built]:
        if self.shipped is None or self.shipped[0] != id(job):
            self.shipped = (id(job), self.ray.put(_shipped(job)))
        refs = [self.remote.remote(self.shipped[1], pipeline, None) for pipeline, _ in tasks]
        return self.ray.get(refs)

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


def _shipped(job: Job) -> Job:
    """The job with its files as bytes (a named data set stays a name)."""
    def ship(file: str | Shipped | None) -> str | Shipped | None:
        if isinstance(file, str) and os.path.isfile(file):
            return Shipped.of(Path(file))
        return file
    return Job(ship(job.model), ship(job.data), ship(job.calibration), job.budget,
               job.original)
