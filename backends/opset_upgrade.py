"""Raise a model's opset and prove it still computes the same: convert (``ir.opset``), load
the result in ONNX Runtime, and run both on the same inputs; take the first converter
whose model agrees, or refuse in one line saying what each converter did.

Opset 7 to 12 exports (Paddle, old tf2onnx) reach the passes this way, and a suggestion to
convert is only made where this can do it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from onnxpress.backends.inputs import ModelInputs
from onnxpress.backends.ort_runner import Runner, first_line
from onnxpress.backends.validity import CHECKER, problems
from onnxpress.errors import BadInputError
from onnxpress.ir.agreement import within
from onnxpress.ir.analysis import opset_version
from onnxpress.ir.opset import CONVERTERS, adopt, converters_for

#: how far a converted model's outputs may stray: float rounding of re-expressed ops only
RTOL, ATOL = 1e-5, 1e-6
#: random input sets tried when no data is given
RANDOM_BATCHES = 2


def upgrade(model: ir.Model, target: int,
            data: Iterable[Mapping[str, np.ndarray]] | None = None) -> str:
    """Convert ``model`` in place to default-domain opset ``target``, verified on ``data``
    (a few batches; random inputs when None). Returns the note for the report; raises
    BadInputError when no converter gives a model that loads and agrees."""
    source = opset_version(model) or 0
    if source == target:
        return f"opset {source} kept"
    reference, feeds, where, loads = _reference(model, data)
    tried = []
    for name in converters_for(source):
        try:
            converted = CONVERTERS[name](model, target)
        except Exception as error:  # converters raise many types; all mean "cannot"
            tried.append(f"{name}'s converter failed ({first_line(error)})")
            continue
        why = _disagreement(converted, feeds, reference, loads)
        if why is None:
            adopt(model, converted)
            checked = (f"outputs agree within {RTOL:g} relative on {where}"
                       if reference is not None else
                       f"loads in ONNX Runtime ({where})" if loads else
                       f"onnx.checker accepts it ({where})")
            return f"default-domain opset converted from {source} to {target} by {name}'s " \
                   f"converter: {checked}"
        tried.append(f"{name}'s converter {why}")
    raise BadInputError(f"cannot convert the model from opset {source} to {target}: "
                        + "; ".join(tried))


def _reference(model: ir.Model, data: Iterable[Mapping[str, np.ndarray]] | None
               ) -> tuple[list[dict] | None, list[dict], str, bool]:
    """The input model's outputs on the verification inputs (None where it does not run
    on them: random inputs it rejects), the inputs, where they came from, and whether the
    input model loads in ONNX Runtime at all (else only onnx.checker can judge)."""
    if data is not None:
        feeds = [dict(batch) for batch, _ in zip(data, range(RANDOM_BATCHES))]
        where = "the calibration data"
    else:
        inputs = ModelInputs.of(model)
        feeds = [inputs.random(seed=s) for s in range(RANDOM_BATCHES)]
        where = "random inputs"
    try:
        runner = Runner(model)
    except BadInputError as error:
        return None, feeds, f"not run: {error}", False
    try:
        return [runner.run(f) for f in feeds], feeds, where, True
    except BadInputError:
        raise
    except Exception as error:  # ORT raises its own classes
        return (None, feeds, f"not run: the input model fails on {where}, "
                f"{first_line(error)}", True)


def _disagreement(converted: ir.Model, feeds: list[dict], reference: list[dict] | None,
                  loads: bool) -> str | None:
    """Why the converted model is not the input model; None when it agrees (or, where the
    input does not load in ONNX Runtime, when onnx.checker accepts it)."""
    if not loads:
        found = problems(converted, (CHECKER,))
        return f"wrote a model onnx.checker rejects ({found[CHECKER]})" if found else None
    try:
        runner = Runner(converted)
    except BadInputError as error:
        return f"wrote a model that does not load ({error})"
    if reference is None:
        return None
    for feed, expected in zip(feeds, reference):
        try:
            got = runner.run(feed)
        except Exception as error:  # ORT raises its own classes
            return f"wrote a model that fails to run ({first_line(error)})"
        for name, want in expected.items():
            have = got.get(name)
            if have is None or np.shape(have) != np.shape(want):
                return f"changed output {name!r}"
            if not within(want, have, rtol=RTOL, atol=ATOL):
                return f"changed output {name!r} beyond rounding"
    return None

