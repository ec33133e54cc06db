"""The one peak-memory probe: this process's resident-set high-water mark.

``VmHWM`` from /proc is per address space, so it starts afresh at exec: a child process
reports its own peak, not the parent's. ``ru_maxrss`` is only the fallback, since on Linux it
survives exec and would count the forking parent. Every benchmark that reports peak memory
runs the work in a child (:mod:`.child`) and reads this there.
"""

from __future__ import annotations

import resource
from pathlib import Path


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size so far, MiB."""
    peak = _status_mb("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return peak


def rss_mb() -> float:
    """Resident set size now, MiB (NaN where /proc is missing)."""
    now = _status_mb("VmRSS")
    return float("nan") if now is None else now
