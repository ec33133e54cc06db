"""What every hostile or careless command must leave behind (issue 22): the exit code it
promises, one line on stderr naming the problem, the input files byte-identical, and no
file created or changed in the watched folders apart from the outputs it was asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from onnxpress.cli import main


def snapshot(folders: Iterable[Path]) -> dict[Path, str]:
    """Every file under ``folders`` with its hash (``?`` for anything not a regular file)."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                found[path] = "?"
            else:
                found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_job(argv: Sequence[str], capfd: pytest.CaptureFixture, *, code: int,
            match: str = "", watch: Iterable[Path] = (), outputs: Iterable[Path] = ()
            ) -> list[str]:
    """Run the CLI; assert its exit ``code`` and, for a failure, exactly one stderr line
    holding ``match`` (captured at the file descriptor, so ONNX Runtime's own C++ logging
    counts); that nothing in ``watch`` changed except ``outputs`` (absent after a failure).
    Returns the stderr lines."""
    watch, outputs = list(watch), set(outputs)
    before = snapshot(watch)
    capfd.readouterr()
    assert main([str(a) for a in argv]) == code
    err = capfd.readouterr().err.strip().splitlines()
    if code != 0:
        assert len(err) == 1 and match in err[0], err
        assert "Traceback" not in err[0] and (code == 3) == ("internal error" in err[0]), err
    after = snapshot(watch)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    allowed = outputs if code == 0 else set()
    assert changed <= allowed, sorted(changed - allowed)
    return err
