"""``onnxpress compile-many``: one pipeline over a fleet of models, each compile a task for
this process, local processes or Ray (:mod:`.workers`), every output the file a single
``onnxpress compile`` writes. A model refused is a one-line reason in the result, and the
others still compile."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from onnxpress.api import compile
from onnxpress.autotune.candidate import File, local_path
from onnxpress.autotune.workers import ship, workers_for
from onnxpress.backends.files import replace_atomically, writable
from onnxpress.backends.onnx_writer import save
from onnxpress.errors import BadInputError

__all__ = ["Compiled", "compile_many"]


@dataclasses.dataclass(frozen=True)
class Compiled:
    model: str
    output: str
    refused: str | None = None  # the one-line reason, if it was


def compile_many(models: Sequence[str | os.PathLike], passes: str | None, out_dir:
                 str | os.PathLike, *, calibration: str | os.PathLike | None = None,
                 workers: int = 1, ray: str | bool | None = None) -> list[Compiled]:
    """Compile each of ``models`` with ``passes`` (None: the target's default) into
    ``out_dir/<name>.onnx``; the results in the order given."""
    out = Path(out_dir)
    if not out.is_dir():
        raise BadInputError(f"{out}: the output folder does not exist; create it first")
    outputs = [out / f"{Path(m).stem}.onnx" for m in models]
    clash = next((o for i, o in enumerate(outputs) if o in outputs[:i]), None)
    if clash is not None:
        raise BadInputError(f"compile-many: two models would both write {clash}; give "
                            "models with distinct file names")
    for model in models:
        if not Path(model).is_file():
            raise BadInputError(f"{model}: no such model file")
    for output in outputs:
        writable(output, reading=[*models, *([calibration] if calibration else [])])
    calibration = None if calibration is None else os.fspath(calibration)
    with workers_for(workers, ray) as pool:
        send = (lambda f: f) if pool.local else ship
        results = pool.call(_compile_one, [
            (send(os.fspath(m)), passes, send(calibration), os.fspath(o) if pool.local else None)
            for m, o in zip(models, outputs, strict=True)])
    done = []
    for model, output, (refused, payload) in zip(models, outputs, results, strict=True):
        if payload is not None:
            replace_atomically(output, lambda tmp, data=payload: tmp.write_bytes(data),
                               reading=[model])
        done.append(Compiled(os.fspath(model), os.fspath(output), refused))
    return done


def _compile_one(model: File, passes: str | None, calibration: File | None,
                 out: str | None) -> tuple[str | None, bytes | None]:
    """(the refusal, None) or (None, the bytes when ``out`` is None, else None)."""
    try:
        compiled = compile(local_path(model), passes, calibration=local_path(calibration),
                           progress=False)
        if out is not None:
            save(compiled, out)
            return None, None
        with tempfile.TemporaryDirectory() as folder:
            path = save(compiled, Path(folder) / "model.onnx")
            return None, path.read_bytes()
    except BadInputError as error:
        return str(error).splitlines()[0], None
