"""``CalibrationData``: the one way passes receive sample inputs.

Sources: an ``.npz`` file (arrays keyed by input name), a folder of them (sorted by name),
or any iterable of ``{input_name: ndarray}`` batches. Bound to a model (``for_model``), a
file's arrays are split along each input's own sample axis, and an array without one (a
scalar, a fixed state) goes into every batch (``backends.inputs``); unbound, samples are on
axis 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from onnxpress.backends.inputs import Batch, ModelInputs
from onnxpress.errors import BadInputError


class CalibrationData:
    def __init__(self, source: str | os.PathLike | Iterable[Batch], *, batch_size: int = 1,
                 inputs: ModelInputs | None = None):
        if batch_size < 1:
            raise BadInputError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._source = source
        self.inputs = inputs or ModelInputs([])
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise BadInputError(f"{path}: no such calibration data file or folder")
            self._files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
            if not self._files:
                raise BadInputError(f"{path}: the folder holds no .npz files")
        else:
            self._files = []

    def for_model(self, inputs: ModelInputs) -> CalibrationData:
        """The same data, its files split by ``inputs``' sample axes."""
        return CalibrationData(self._source, batch_size=self.batch_size, inputs=inputs)

    def __iter__(self) -> Iterator[Batch]:
        if not self._files:
            yield from (dict(batch) for batch in self._source)  # type: ignore[union-attr]
            return
        for file in self._files:
            yield from self._batches(file)

    def _batches(self, file: Path) -> Iterator[Batch]:
        try:
            with np.load(file, allow_pickle=False) as arrays:  # arrays are read here
                data = {name: arrays[name] for name in arrays.files}
        except Exception as error:  # noqa: BLE001 - numpy's header parser raises many kinds
            # a truncated or corrupt archive fails on the first array it reads, not on open
            raise BadInputError(f"{file}: not a readable .npz file ({error})") from None
        yield from self.inputs.batches(data, self.batch_size, origin=str(file))

    def take(self, count: int) -> list[Batch]:
        batches = []
        for batch in self:
            if len(batches) >= count:
                break
            batches.append(batch)
        return batches
