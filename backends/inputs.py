"""Model inputs as they are: which axis of each input holds the samples (or none: a scalar
such as a sample rate, a fixed-shape table), symbolic dims, and the value range an integer
input may take. Calibration, ``--check``, ``compare``, ``lower-qdq``'s timing and ``bench``
make and slice their inputs here and nowhere else.

The sample axis of an input, in this order:
1. none for a scalar;
2. axis 0 when the rank is unknown;
3. the axis named like the batch dim, the symbolic name most inputs carry on axis 0
   (``state[2, batch, 128]`` beside ``input[batch, sequence]`` -> axis 1);
4. axis 0 when it is dynamic, or fixed at 1 (an export with its batch pinned);
5. the first dynamic axis (``state[2, ?, 128]`` beside ``input[?, ?]``);
6. none: a fixed-shape input, the same array in every batch.

Data arrays (an ``.npz`` of a calibration file, keyed by input name) meet the inputs so:
an array of the input's rank holds samples along the sample axis, or is the same for every
sample where the input has none or the array's length there is the input's fixed one; an
array of one more dimension is a stack of single-sample feeds (axis 0), joined along the
sample axis into batches.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array

#: the length a dynamic axis gets in random inputs when nothing names it: long enough for
#: a reflect Pad or a stride-32 detector, short enough for a quick check
DEFAULT_DIM = 64

#: random integers for an input nothing bounds: {0, 1}, a flag or mask
FLAG_RANGE = (0, 2)

Dim = int | str | None  # fixed length, symbolic name, or unknown
Batch = dict[str, np.ndarray]

#: ops that pass an index through unchanged on its way to a Gather
_INDEX_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...] | None  # None: unknown rank
    sample_axis: int | None
    #: [low, high) of random integers: a Gather table's length, a byte's range, else {0, 1}
    int_range: tuple[int, int] = FLAG_RANGE

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    def fixed_samples(self) -> int | None:
        """The input's fixed length along its sample axis, when it has one."""
        if self.sample_axis is None or self.dims is None:
            return None
        dim = self.dims[self.sample_axis]
        return dim if isinstance(dim, int) else None

    def shape(self, batch: int, dims: Mapping[str, int]) -> tuple[int, ...]:
        if self.dims is None:
            return (batch,)
        out = []
        for axis, dim in enumerate(self.dims):
            if isinstance(dim, int):
                out.append(dim)
            elif isinstance(dim, str) and dim in dims:
                out.append(dims[dim])
            elif axis == self.sample_axis:
                out.append(batch)
            else:
                out.append(DEFAULT_DIM)
        return tuple(out)

    def guessed(self, dims: Mapping[str, int]) -> list[str]:
        """The dynamic axes that random inputs give ``DEFAULT_DIM``, for error messages."""
        if self.dims is None:
            return []
        return [f"{self.name}[{axis}]" if dim is None else str(dim)
                for axis, dim in enumerate(self.dims)
                if not isinstance(dim, int) and axis != self.sample_axis
                and not (isinstance(dim, str) and dim in dims)]


def _dims(value: ir.Value) -> tuple[Dim, ...] | None:
    if value.shape is None:
        return None
    out: list[Dim] = []
    for dim in value.shape.dims:
        if isinstance(dim, int):
            out.append(dim if dim >= 0 else None)
        else:
            name = dim.value if isinstance(dim, ir.SymbolicDim) else None
            # exporters write "?" or "-1" for "unknown", which is no name to share
            out.append(name if name and name not in ("?", "-1") else None)
    return tuple(out)


def _batch_name(all_dims: Sequence[tuple[Dim, ...] | None]) -> str | None:
    names = collections.Counter(d[0] for d in all_dims if d and isinstance(d[0], str))
    return names.most_common(1)[0][0] if names else None


def _sample_axis(dims: tuple[Dim, ...] | None, batch_name: str | None) -> int | None:
    if dims is None:
        return 0
    if not dims:
        return None
    if batch_name is not None and batch_name in dims:
        return dims.index(batch_name)
    if not isinstance(dims[0], int) or dims[0] == 1:
        return 0
    dynamic = [axis for axis, dim in enumerate(dims) if not isinstance(dim, int)]
    return dynamic[0] if dynamic else None


def _int_range(value: ir.Value, dtype: np.dtype) -> tuple[int, int]:
    """Indices into a constant table range over its length; bytes over a byte's values."""
    lengths = []
    pending, seen = [value], set()
    while pending:
        current = pending.pop()
        for node, index in current.uses():
            if node.op_type in _INDEX_PASSTHROUGH and index == 0 and node.outputs:
                if id(node.outputs[0]) not in seen:
                    seen.add(id(node.outputs[0]))
                    pending.append(node.outputs[0])
            elif node.op_type == "Gather" and index == 1:
                table = constant_array(node.inputs[0])
                if table is not None and table.ndim:
                    axis = node.attributes.get_int("axis", 0)
                    lengths.append(table.shape[axis])
    if lengths:
        return 0, min(lengths)
    if dtype in (np.uint8, np.int8):
        info = np.iinfo(dtype)
        return int(info.min), int(info.max) + 1
    return FLAG_RANGE


class ModelInputs:
    """The inputs of one model: a spec per graph input, in the graph's order."""

    def __init__(self, specs: Sequence[InputSpec]) -> None:
        self.specs = list(specs)
        self.by_name = {spec.name: spec for spec in self.specs}
        #: dims that are the sum of two others: a KV-cache model's attention mask covers
        #: the past and the new tokens (total = past + sequence)
        self.sums = _cache_sums(self.specs)

    @classmethod
    def of(cls, model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None
           ) -> ModelInputs:
        """``shapes``: a full shape for some inputs (``--input-shape``), fixing their dims."""
        shapes = dict(shapes or {})
        unknown = sorted(set(shapes) - {v.name for v in model.graph.inputs})
        if unknown:
            names = ", ".join(v.name or "?" for v in model.graph.inputs)
            raise BadInputError(f"--input-shape names {unknown[0]!r}, which is not an input "
                                f"of the model (its inputs: {names})")
        values = list(model.graph.inputs)
        all_dims = [_dims(v) for v in values]
        batch_name = _batch_name(all_dims)
        specs = []
        for value, dims in zip(values, all_dims):
            dtype = _numpy_dtype(value)
            if value.name in shapes:
                given = tuple(int(d) for d in shapes[value.name])
                if dims is not None and len(given) != len(dims):
                    raise BadInputError(f"--input-shape {value.name}: {len(given)} dims given, "
                                        f"the input has {len(dims)}")
                axis = _sample_axis(dims, batch_name)
                dims = given
            else:
                axis = _sample_axis(dims, batch_name)
            int_range = (_int_range(value, dtype) if np.issubdtype(dtype, np.integer)
                         else FLAG_RANGE)
            specs.append(InputSpec(value.name, dtype, dims, axis, int_range))
        return cls(specs)

    # -- random inputs --------------------------------------------------------------------

    def random(self, *, seed: int = 0, batch: int = 1,
               dims: Mapping[str, int] | None = None) -> Batch:
        """Random inputs of the declared types; ``dims`` gives symbolic dims by name
        (``--dim batch=1``), unknown ones are ``batch`` on the sample axis and
        ``DEFAULT_DIM`` elsewhere; integers stay within each input's range."""
        rng = np.random.default_rng(seed)
        dims = self.resolved(dims)
        return {spec.name: _random(rng, spec, spec.shape(batch, dims)) for spec in self.specs}

    def resolved(self, dims: Mapping[str, int] | None = None) -> dict[str, int]:
        """``dims`` with each sum dim not given set to its parts (``DEFAULT_DIM`` where a
        part is not given either)."""
        dims = dict(dims or {})
        for total, parts in self.sums.items():
            if total not in dims:
                dims[total] = sum(dims.get(part, DEFAULT_DIM) for part in parts)
        return dims

    def guessed_dims(self, dims: Mapping[str, int] | None = None) -> list[str]:
        return sorted({g for spec in self.specs for g in spec.guessed(self.resolved(dims))})

    def describe_random(self, dims: Mapping[str, int] | None = None) -> str:
        """What ``random`` had to guess, for a message: "random inputs (dynamic dims set to
        64: width; integers drawn from {0, 1}: sr)"."""
        guessed = self.guessed_dims(dims)
        flags = [spec.name for spec in self.specs
                 if np.issubdtype(spec.dtype, np.integer) and spec.int_range == FLAG_RANGE]
        said = ([f"dynamic dims set to {DEFAULT_DIM}: {', '.join(guessed)}"] if guessed
                else []) + ([f"integers drawn from {{0, 1}}: {', '.join(flags)}"]
                            if flags else [])
        return "random inputs" + (f" ({'; '.join(said)})" if said else "")

    def check_dims(self, dims: Mapping[str, int]) -> None:
        known = {d for spec in self.specs for d in (spec.dims or ()) if isinstance(d, str)}
        unknown = sorted(set(dims) - known)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise BadInputError(f"--dim names {unknown[0]!r}, which no model input has "
                                f"(named dims: {listed})")

    # -- data arrays ----------------------------------------------------------------------

    def batches(self, arrays: Mapping[str, np.ndarray], batch_size: int = 1,
                *, origin: str = "the data") -> Iterator[Batch]:
        """Split one file's arrays into batches of ``batch_size`` samples per input."""
        plans = {name: self._plan(name, np.asarray(array), origin)
                 for name, array in arrays.items()}
        counts = {name: plan[1] for name, plan in plans.items() if plan[1] is not None}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
            raise BadInputError(f"{origin}: inputs disagree on the number of samples ({listed})")
        total = next(iter(counts.values()), 1)
        step = batch_size
        for name, (mode, _) in plans.items():
            spec = self.by_name.get(name)
            if mode == "stack" and (spec is None or spec.sample_axis is None):
                step = 1  # single-sample feeds of an input without a sample axis: one each
            fixed = spec.fixed_samples() if spec is not None else None
            if mode == "slice" and fixed is not None:
                step = min(step, fixed)
        for start in range(0, total, step):
            yield {name: self._take(name, np.asarray(arrays[name]), mode, start, step)
                   for name, (mode, _) in plans.items()}

    def _plan(self, name: str, array: np.ndarray, origin: str) -> tuple[str, int | None]:
        """How an array is read: ``same`` (every batch), ``slice`` (along the sample axis)
        or ``stack`` (single-sample feeds on axis 0); and its number of samples."""
        spec = self.by_name.get(name)
        if spec is None or spec.rank is None:  # not a model input: samples on axis 0
            return ("slice", len(array)) if array.ndim else ("same", None)
        if array.ndim == spec.rank + 1:
            if len(array):
                self._check_array(spec, array[0], origin)
            return "stack", len(array)
        if array.ndim != spec.rank:
            raise BadInputError(f"{origin}: array {name!r} has shape {list(array.shape)}, "
                                f"the input has {spec.rank} dims {_shown(spec.dims)}")
        self._check_array(spec, array, origin)
        axis = spec.sample_axis
        fixed = spec.fixed_samples()
        if axis is None or (fixed is not None and array.shape[axis] == fixed):
            return "same", None
        return "slice", array.shape[axis]

    @staticmethod
    def _check_array(spec: InputSpec, array: np.ndarray, origin: str) -> None:
        """One sample's array against the input: ONNX Runtime would refuse it with an
        error that names neither the file nor the fix."""
        if _kind(array.dtype) != _kind(spec.dtype) or not _fits(array, spec.dtype):
            raise BadInputError(f"{origin}: array {spec.name!r} holds {array.dtype}, the "
                                f"input takes {spec.dtype}; convert it")
        for axis, (want, got) in enumerate(zip(spec.dims or (), array.shape)):
            if isinstance(want, int) and axis != spec.sample_axis and want != got:
                raise BadInputError(f"{origin}: array {spec.name!r} has shape "
                                    f"{list(array.shape)}, the input takes "
                                    f"{_shown(spec.dims)}")

    def _take(self, name: str, array: np.ndarray, mode: str, start: int, step: int
              ) -> np.ndarray:
        """The batch's part of ``array``, in the input's element type (numpy saves float64
        and int64 by default; ``_check_array`` allowed only casts within a kind)."""
        spec = self.by_name.get(name)
        if spec is not None and array.dtype != spec.dtype and spec.dtype != np.dtype(object):
            return self._take(name, array.astype(spec.dtype), mode, start, step)
        if mode == "same":
            return array
        axis = 0 if spec is None or spec.sample_axis is None else spec.sample_axis
        if mode == "stack":
            part = array[start:start + step]
            if spec is None or spec.sample_axis is None:
                return np.asarray(part[0])  # a 0-d array, not a numpy scalar ORT refuses
            return np.concatenate(list(part), axis=axis)
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, start + step)
        return array[tuple(index)]

    def first(self, feeds: Mapping[str, np.ndarray]) -> Batch:
        """The first sample of a batch, per input along its own sample axis."""
        return next(self.batches(feeds, 1, origin="the first batch"))


def _kind(dtype: np.dtype) -> str:
    """float, integer, bool or text: within one, a cast keeps what the data says."""
    return {"f": "float", "i": "integer", "u": "integer", "b": "bool"}.get(dtype.kind, "text"
                                                                         if dtype.kind in "OUS"
                                                                         else dtype.kind)


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    if _kind(dtype) != "integer" or array.size == 0:
        return True
    limits = np.iinfo(dtype)
    return limits.min <= array.min() and array.max() <= limits.max


def _cache_sums(specs: Sequence[InputSpec]) -> dict[str, tuple[str, str]]:
    """``{total: (past, sequence)}`` for a decoder exported with its KV cache: rank-4
    ``past*`` inputs sharing a symbolic length at axis 2, ``input_ids`` [B, sequence], and
    an ``attention_mask`` [B, total] whose length no other input has."""
    past = {spec.dims[2] for spec in specs if spec.name.startswith("past") and spec.dims
            and len(spec.dims) == 4}
    ids = [spec.dims[1] for spec in specs if spec.name == "input_ids" and spec.dims
           and len(spec.dims) == 2]
    masks = [spec for spec in specs if spec.name == "attention_mask" and spec.dims
             and len(spec.dims) == 2]
    if len(past) != 1 or len(ids) != 1 or len(masks) != 1:
        return {}
    (length,), sequence, total = past, ids[0], masks[0].dims[1]
    named = [d for d in (length, sequence, total) if isinstance(d, str)]
    others = [d for spec in specs if spec is not masks[0] for d in (spec.dims or ())]
    if len(set(named)) != 3 or total in others:
        return {}
    return {total: (length, sequence)}


def _shown(dims: tuple[Dim, ...] | None) -> str:
    return "?" if dims is None else "[" + ", ".join("?" if d is None else str(d)
                                                   for d in dims) + "]"


def _numpy_dtype(value: ir.Value) -> np.dtype:
    if value.dtype is None:
        raise BadInputError(f"model input {value.name!r} has no element type; give data for it")
    if value.dtype == ir.DataType.STRING:
        return np.dtype(object)
    try:
        return np.dtype(value.dtype.numpy())
    except (TypeError, ValueError):
        raise BadInputError(f"model input {value.name!r} has type {value.dtype}; "
                            "give data for it") from None


def _random(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    if spec.dtype == np.dtype(object):
        return np.full(shape, "a", dtype=object)
    if spec.dtype == np.bool_:  # an array even at rank 0 (a scalar If condition)
        return np.asarray(rng.random(shape) < 0.5)
    if np.issubdtype(spec.dtype, np.integer):
        low, high = spec.int_range
        return rng.integers(low, high, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)
