"""Exports cached on disk: a model built in code is exported once and reused.

The file is ``<cache_dir>/<stem>-<key>.onnx``. The key hashes what the export depends on
(the builder's source, the torch version, the weights' package version), so a change to any
exports afresh. ``cache_dir`` defaults to ``$ONNXPRESS_CACHE``, else ``~/.cache/onnxpress``.
The export goes to a temporary file renamed into place, so a crashed or concurrent export
never leaves a partial file under the final name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def builder_key(sources: Iterable[Path], packages: Iterable[str] = ("torch",)) -> str:
    """A short hash of ``sources``' text and the installed versions of ``packages``."""
    digest = hashlib.sha256()
    for package in packages:
        digest.update(f"{package}={importlib.metadata.version(package)};".encode())
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def cached_export(stem: str, key: str, export: Callable[[str], object],
                  cache_dir: Path | None = None) -> Path:
    """The cached file for ``stem`` and ``key``, made by ``export(path)`` on first use."""
    env = os.environ.get("ONNXPRESS_CACHE")
    directory = Path(cache_dir or env or Path.home() / ".cache" / "onnxpress").expanduser()
    path = directory / f"{stem}-{key}.onnx"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        export(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
