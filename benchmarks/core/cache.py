"""The one cache of the benchmarks: files built once (a model export, a peer tool's
quantized model), found again by a key.

``Cache(root).file(key, build)`` returns ``root/KEY[0]/NAME.onnx`` (NAME from the rest of
the key), calling ``build(path)`` first when it is not there yet. ``build`` writes the file
(and any siblings it wants, named after it) and returns a dict of facts about it (notes,
sources, the producing tool's version...), kept beside it in ``NAME.meta.json``. That file
is written last, so an interrupted build is never taken for a finished one. Keys name what
the file depends on (the model, the variant, the producing tool's version), so that a new
tool version builds afresh. ``fresh=True`` rebuilds every key once in this run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

Build = Callable[[Path], Mapping[str, Any] | None]
_SAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def version_tag(*packages: str) -> str:
    """A key part naming the versions a file depends on: ``onnxruntime1.20.0-torch2.5.0``
    (``no-torch`` for a package that is not installed)."""
    parts = []
    for package in packages:
        try:
            parts.append(f"{package}{version(package)}")
        except PackageNotFoundError:
            parts.append(f"no-{package}")
    return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class Entry:
    path: Path
    meta: dict[str, Any]  # what build returned, plus build_s
    cached: bool  # found, not built in this call


class Cache:
    def __init__(self, root: Path, *, fresh: bool = False) -> None:
        self.root = Path(root)
        self.fresh = fresh
        self._built: set[Path] = set()  # what this run rebuilt, when fresh

    def path(self, key: Sequence[str], suffix: str = ".onnx") -> Path:
        """Where ``key``'s file lives; unsafe or long keys get a digest, not a mangled name."""
        folder, *rest = key
        name = "-".join(rest) or "file"
        slug = _SAFE.sub("_", name)
        if slug != name or len(slug) > 80:
            slug = f"{slug[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
        return self.root / _SAFE.sub("_", folder) / f"{slug}{suffix}"

    def file(self, key: Sequence[str], build: Build, *, suffix: str = ".onnx") -> Entry:
        path = self.path(key, suffix)
        meta_path = path.with_name(f"{path.name}.meta.json")
        stale = self.fresh and path not in self._built
        if meta_path.is_file() and path.exists() and not stale:
            return Entry(path, json.loads(meta_path.read_text()), cached=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        started = time.perf_counter()
        meta = dict(build(path) or {})
        if not path.exists():
            raise RuntimeError(f"building {'/'.join(key)} wrote no {path.name}")
        meta["build_s"] = time.perf_counter() - started
        meta_path.write_text(json.dumps(meta, indent=1, default=str))
        self._built.add(path)
        return Entry(path, meta, cached=False)
