"""``CalibrationData``: the one way passes receive sample inputs.

Sources: an ``.npz`` file (arrays keyed by input name, first axis = samples), a folder of
them (sorted by name), or any iterable of ``{input_name: ndarray}`` batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from onnxpress.errors import BadInputError

Batch = dict[str, np.ndarray]


class CalibrationData:
    def __init__(self, source: str | os.PathLike | Iterable[Batch], *, batch_size: int = 1):
        if batch_size < 1:
            raise BadInputError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._source = source
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise BadInputError(f"{path}: no such calibration data file or folder")
            self._files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
            if not self._files:
                raise BadInputError(f"{path}: the folder holds no .npz files")
        else:
            self._files = []

    def __iter__(self) -> Iterator[Batch]:
        if not self._files:
            yield from (dict(batch) for batch in self._source)  # type: ignore[union-attr]
            return
        for file in self._files:
            yield from self._batches(file)

    def _batches(self, file: Path) -> Iterator[Batch]:
        try:
            arrays = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise BadInputError(f"{file}: not a readable .npz file ({error})") from None
        with arrays:
            data = {name: arrays[name] for name in arrays.files}
        counts = {len(a) for a in data.values() if a.ndim > 0}
        if len(counts) != 1:
            raise BadInputError(f"{file}: arrays disagree on the number of samples (axis 0)")
        (count,) = counts
        for start in range(0, count, self.batch_size):
            yield {name: a[start : start + self.batch_size] for name, a in data.items()}

    def take(self, count: int) -> list[Batch]:
        batches = []
        for batch in self:
            if len(batches) >= count:
                break
            batches.append(batch)
        return batches
