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

import contextlib
import contextvars
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from onnxpress.errors import BadInputError

#: the folder a command's temporary files go to (its output's); None: the system's
_SCRATCH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("onnxpress_scratch",
                                                                      default=None)


@contextlib.contextmanager
def scratch_in(folder: str | os.PathLike) -> Iterator[None]:
    """Temporary files made inside (a large model's copy for ONNX Runtime, the input's
    snapshot) go to ``folder``: the job's own output folder, not the system's."""
    token = _SCRATCH.set(Path(folder))
    try:
        yield
    finally:
        _SCRATCH.reset(token)


def scratch(what: str) -> tempfile.TemporaryDirectory:
    """A hidden temporary folder for ``what``, where ``scratch_in`` says (else the system's
    temporary folder); removed by its ``cleanup`` or on exit of its ``with``."""
    return tempfile.TemporaryDirectory(prefix=f".onnxpress-{what}-", suffix=".tmp",
                                       dir=_SCRATCH.get())


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


def replace_atomically(path: str | os.PathLike, write: Callable[..., None], *,
                       reading: Iterable[str | os.PathLike] = (), what: str = "output",
                       sidecar: str | os.PathLike | None = None) -> Path:
    """Check ``path`` (``writable``), have ``write`` fill a temporary file beside it, then
    rename that into place with the permission bits the file had (or a new file's).

    With ``sidecar`` (the external-data file ``path`` will name), ``write(tmp, sidecar_tmp)``
    fills both, and they are renamed as a pair: the old model first removed, then the
    sidecar, then the model. A kill at any point leaves the old pair, no model, or the new
    pair, never a model beside a sidecar that is not its own."""
    path = writable(path, reading=reading, what=what)
    targets = [path]
    if sidecar is not None:
        targets.append(writable(sidecar, reading=reading, what="external data"))
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(_temporary(target))
        write(*temps)
        for tmp, target in zip(temps, targets, strict=True):
            os.chmod(tmp, _mode(target))
        if sidecar is not None:
            path.unlink(missing_ok=True)
            os.replace(temps[1], targets[1])
        os.replace(temps[0], path)
    except OSError as error:  # a full disk, a folder gone read-only
        _remove(temps)
        raise BadInputError(f"{path}: cannot write it ({error.strerror or error})") from None
    except BaseException:  # including a signal the CLI turned into an exception
        _remove(temps)
        raise
    return path


def _temporary(target: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:  # a read-only or full folder: the user's to fix
        raise BadInputError(f"{target}: cannot write in {target.parent} "
                            f"({error.strerror})") from None
    os.close(fd)
    return Path(name)


def _mode(target: Path) -> int:
    return stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask()


def _remove(temps: list[Path]) -> None:
    for tmp in temps:
        tmp.unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
