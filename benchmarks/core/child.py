"""Work in a fresh child process: ``run_child(function, **kwargs)``.

Why a child: torch (exports, QAT, ModelOpt) must never load into the process that times
ONNX Runtime; peak memory is only a process's own in a fresh one (:mod:`.memory`); a peer
tool's crash, logging set-up or stray files stay there. The child imports ``function``'s
module by name, calls it with the JSON-able ``kwargs`` and writes what it returned (JSON-able
too), with its peak RSS and wall time, to a result file. It runs from the folder that holds
the ``benchmarks`` package, so the module resolves as it did here.

    python -m benchmarks.core.child MODULE:FUNCTION ARGS.json RESULT.json
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .memory import peak_rss_mb

#: the folder ``python -m benchmarks...`` must start in: the one above the package
ROOT = Path(__file__).resolve().parents[2]


class ChildError(RuntimeError):
    """The child failed; the message is its error's one line."""


def run_child(function: Callable[..., Any], *, timeout: float | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """``{"value": function(**kwargs), "peak_rss_mb": ..., "seconds": ...}`` from a child;
    raises ChildError with the child's last error line (TimeoutError past ``timeout``)."""
    target = f"{function.__module__}:{function.__qualname__}"
    package = __spec__.parent if __spec__ else "benchmarks.core"
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        args, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args.write_text(json.dumps(kwargs, default=os.fspath))
        command = [sys.executable, "-m", f"{package}.child", target, str(args), str(result)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  timeout=timeout, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{function.__name__} took over {timeout:.0f}s") from None
        said = json.loads(result.read_text()) if result.is_file() else {}
    if proc.returncode != 0 or "error" in said:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise ChildError(said.get("error") or (lines[-1] if lines else f"exit {proc.returncode}"))
    return said


def main(argv: list[str]) -> int:
    target, args_path, result_path = argv
    module, name = target.split(":")
    started = time.perf_counter()
    said: dict[str, Any] = {}
    try:
        function = getattr(importlib.import_module(module), name)
        said["value"] = function(**json.loads(Path(args_path).read_text()))
    except BaseException as error:  # noqa: BLE001 - anything (SystemExit from a tool too)
        text = str(error).strip()
        said["error"] = f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
        said["traceback"] = traceback.format_exc().splitlines()[-12:]
    said.update(peak_rss_mb=peak_rss_mb(), seconds=time.perf_counter() - started)
    Path(result_path).write_text(json.dumps(said, default=str))
    return 1 if "error" in said else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
