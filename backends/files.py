"""Where onnxpress may write, and how: the one place every output goes through (the model
and its ``.data`` sidecar, the JSON report, ONNX Runtime's optimised model).

An output must be a new path or an existing regular file, never a symbolic link (a planted
``out.onnx.data -> ../victim`` would otherwise receive the weights), a FIFO or a device, and
never one of the files the job reads (the input model, its external data, the calibration
data, the config): ``--report model.onnx`` or ``-o weights.bin`` used to overwrite them.
Each file is written to a temporary name beside it and renamed into place, so a reader
never sees half a file; an overwritten file keeps its permission bits, a new one gets what
the umask gives a new file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from onnxpress.errors import BadInputError


def writable(path: str | os.PathLike, *, reading: Iterable[str | os.PathLike] = (),
             what: str = "output") -> Path:
    """``path``, checked as an output of a job that reads ``reading``; a one-line refusal
    names the path and why."""
    path = Path(path)
    if path.is_symlink():
        raise BadInputError(f"{path}: the {what} path is a symbolic link; onnxpress does not "
                            "write through links: give a new path or a regular file")
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, device or socket)"
        raise BadInputError(f"{path}: the {what} path is {kind}; give a file name such as "
                            "model.onnx")
    if not path.parent.is_dir():
        raise BadInputError(f"{path}: the folder {path.parent} does not exist; create it first")
    for source in reading:
        if _same(path, Path(source)):
            raise BadInputError(f"{path}: the {what} would overwrite {source}, which this job "
                                "reads; choose another path")
    return path


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None], *,
                       reading: Iterable[str | os.PathLike] = (), what: str = "output"
                       ) -> Path:
    """Check ``path`` (``writable``), have ``write`` fill a temporary file beside it, then
    rename that into place with the permission bits the file had (or a new file's)."""
    path = writable(path, reading=reading, what=what)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # a read-only or full folder: the user's to fix
        raise BadInputError(f"{path}: cannot write in {path.parent} "
                            f"({error.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a folder gone read-only
        tmp.unlink(missing_ok=True)
        raise BadInputError(f"{path}: cannot write it ({error.strerror or error})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
