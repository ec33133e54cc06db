"""The one JSON result every suite writes: ``OUT/SUITE.json``.

    {"schema": 1, "suite": NAME, "machine": {...}, "versions": {package: version},
     "config": {models, variants, repeats, threads, smoke, options, ...},
     "rows": [{model, variant, status, ...}, ...], "tables": {title: markdown},
     "wall_s": seconds}

Rows are each suite's own (see the suite's docstring for their fields); ``status`` is
``ok``, ``error`` (with ``error``) or ``unavailable`` (with ``reason``) in every suite.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SCHEMA = 1
PACKAGES = ("onnxpress", "onnx", "onnxruntime", "onnx-ir", "onnxscript", "numpy", "torch",
            "onnxslim", "onnxsim", "nvidia-modelopt", "onnx-neural-compressor", "matplotlib")


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def result(suite: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "suite": suite, "machine": machine(), "versions": versions(),
            "config": config, "rows": [], "tables": {}, "wall_s": 0.0}


def write_json(data: dict[str, Any], path: Path) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
