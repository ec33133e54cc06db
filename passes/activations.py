"""Streaming a model's intermediate values over calibration data: what every data-driven pass
reads (quantization ranges, bias correction, pruning's Gram matrices and norms).

``stream`` runs a copy of the model with the named values as extra outputs, one batch at a
time, and hands each value to its callbacks (a value inside an If branch comes from a copy
with the branches that batch takes inlined, ``ir.branches``; a branch it does not take gives
nothing); nothing of a batch is kept after its callbacks
return, so memory stays one batch of activations whatever the data's length (ONNX
Runtime's entropy calibrator keeps them all). A progress bar shows on long runs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from onnxpress.backends.ort_runner import IN_MEMORY_BYTES, Runner, give_back_memory
from onnxpress.errors import BadInputError, RuntimeRefusedError
from onnxpress.ir.analysis import constant_array, is_constant, parameter_bytes
from onnxpress.ir.branches import branches, copy_model, if_nodes, reaching, specialise
from onnxpress.passes.calibration_data import Batch, CalibrationData

__all__ = ["stream", "with_outputs"]

logger = logging.getLogger(__name__)

Sink = Callable[[np.ndarray], object]


def stream(
    model: ir.Model,
    sinks: Mapping[str, Sequence[Sink]],
    data: CalibrationData | Iterable[Batch],
    *,
    max_batches: int | None = None,
    progress: bool | None = None,
) -> int:
    """Give every callback of ``sinks`` (value name -> callables) that value for each batch
    of ``data`` (at most ``max_batches``); the number of batches run.

    Graph inputs come from the data, constants from their content (once); every other value
    becomes an extra output of a copy of the model (the caller's model is not changed).
    """
    if not sinks:
        return 0
    found = _main_graph_values(model.graph)
    inside = _branch_values(model.graph)
    for name in sinks:
        if name not in found and name not in inside:
            raise BadInputError(f"{name!r} is not a value of the model's main graph or of "
                                "an If branch; give the name of a node output, graph input "
                                "or initializer")
    found = {**inside, **found}
    inputs = {v.name for v in model.graph.inputs}
    constants = [n for n in sinks if n not in inputs and is_constant(found[n])]
    for name in constants:
        for sink in sinks[name]:
            sink(constant_array(found[name]))
    exposed = [n for n in sinks if n not in inputs and n not in constants]
    logger.debug("streaming %d values (%d as extra outputs)", len(sinks), len(exposed))
    if any(name in inside for name in exposed):
        runner: Runner | _Specialised | None = _Specialised(model, exposed)
    else:
        runner = Runner(with_outputs(model, exposed)) if exposed else None
    required = [v.name for v in model.graph.inputs if v.const_value is None]
    batches = data if max_batches is None else itertools.islice(data, max_batches)
    total = max_batches if max_batches is not None else _length(data)
    hidden = None if progress is None else not progress
    count = 0
    for batch in tqdm(batches, desc="calibrate", unit="batch", total=total, disable=hidden,
                      leave=False):
        _check_batch(batch, required)
        outputs = _run(runner, batch, count) if runner is not None else {}
        for name, name_sinks in sinks.items():
            if name in outputs:
                value = outputs[name]
            elif name in inputs and name in batch:
                value = batch[name]
            elif name in inputs and count == 0 and found[name].const_value is not None:
                value = found[name].const_value.numpy()  # initializer input
            else:
                continue
            for sink in name_sinks:
                sink(value)
        del outputs  # before the next batch runs: never two batches of activations
        count += 1
    if runner is not None and parameter_bytes(model) >= IN_MEMORY_BYTES:
        del runner  # its session's memory, back before the caller allocates its own
        give_back_memory()
    if count == 0:
        raise BadInputError("the calibration data holds no batches; give at least one sample")
    return count


def with_outputs(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` (sharing its weights) whose graph also outputs ``names``."""
    copy = model.clone()
    found = _main_graph_values(copy.graph)
    present = {v.name for v in copy.graph.outputs}
    copy.graph.outputs.extend(found[n] for n in names if n not in present)
    return copy


def _main_graph_values(graph: ir.Graph) -> dict[str, ir.Value]:
    found: dict[str, ir.Value] = {}
    for value in [*graph.inputs, *graph.initializers.values()]:
        found[value.name] = value
    for node in graph:
        for value in node.outputs:
            if value.name:
                found[value.name] = value
    return found


def _branch_values(graph: ir.Graph) -> dict[str, ir.Value]:
    """Values computed inside the branches of the main graph's Ifs (nested ones too)."""
    found: dict[str, ir.Value] = {}
    for node in if_nodes(graph):
        for body in branches(node):
            found.update(_main_graph_values(body))
    return found


class _Specialised:
    """Runs the model with the If branches each batch takes inlined (``ir.branches``), so
    that values inside them come out as outputs; a value of a branch the batch did not take
    is absent. One session per set of decisions: a batch decides the main graph's Ifs,
    then those its branches bring in, and so on."""

    def __init__(self, model: ir.Model, names: Sequence[str]) -> None:
        self.model, self.names = model, list(names)
        self.stages: dict[tuple, tuple[Runner, list[tuple[str, ir.Value]]]] = {}

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        decisions: dict[str, bool] = {}
        while True:
            runner, pending = self._stage(decisions)
            outputs = runner.run(batch)
            if not pending:
                return outputs
            for name, cond in pending:
                value = (outputs.get(cond.name) if cond.name in outputs else
                         batch.get(cond.name) if cond.is_graph_input() else
                         constant_array(cond))
                if value is None:
                    return outputs  # a condition we cannot read: what is known so far
                decisions[name] = bool(np.asarray(value).reshape(-1)[0])

    def _stage(self, decisions: dict[str, bool]) -> tuple[Runner, list[tuple[str, ir.Value]]]:
        key = tuple(sorted(decisions.items()))
        if key not in self.stages:
            copy = copy_model(self.model)
            undecided = reaching(specialise(copy, decisions), self.names)
            present = _main_graph_values(copy.graph)
            conds = [n.inputs[0] for n in undecided if n.inputs and n.inputs[0] is not None]
            wanted = [n for n in self.names if n in present and not present[n].is_graph_input()]
            wanted += [c.name for c in conds if c.producer() is not None and c.name]
            self.stages[key] = (Runner(with_outputs(copy, wanted)),
                                [(n.name, n.inputs[0]) for n in undecided if n.inputs])
        return self.stages[key]


def _length(data: object) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_batch(batch: Batch, required: Sequence[str]) -> None:
    for name in required:
        if name not in batch:
            given = ", ".join(sorted(batch)) or "nothing"
            raise BadInputError(f"the calibration data has no {name!r} (it gives {given}); "
                                "give every model input in each batch")


def _run(runner: Runner | _Specialised, batch: Batch, index: int) -> dict[str, np.ndarray]:
    try:
        return runner.run(batch)
    except RuntimeRefusedError as error:  # a feed of the wrong dtype or shape
        raise RuntimeRefusedError(f"calibration batch {index}: {error}", loading=error.loading,
                                  reason=error.reason) from None
