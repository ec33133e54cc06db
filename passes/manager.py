"""PassManager: run an ordered list of passes, timing and measuring each, verifying the IR
after each one, and optionally checking the result's outputs against the input model's."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxpress.backends.files import scratch
from onnxpress.backends.inputs import ModelInputs
from onnxpress.backends.onnx_writer import save, to_proto
from onnxpress.backends.ort_runner import IN_MEMORY_BYTES, Runner, give_back_memory
from onnxpress.backends.validity import (
    CHECKER,
    RUNTIME,
    VALIDATORS,
    checkable,
    inference_error,
    problems,
)
from onnxpress.errors import (
    BadInputError,
    CheckFailedError,
    OnnxpressError,
    PassFailedError,
    RuntimeRefusedError,
)
from onnxpress.ir.analysis import count_nodes, count_parameters, parameter_bytes, unknown_ops
from onnxpress.ir.marks import LOAD_NOTES
from onnxpress.ir.verify import VerificationError, verify
from onnxpress.passes.base import Pass, PassStats, with_data, with_passes
from onnxpress.passes.calibration_data import CalibrationData
from onnxpress.passes.numeric_check import compare_outputs, merge_checks
from onnxpress.passes.pipeline import format_pipeline, parse_pipeline
from onnxpress.passes.registry import PassRegistry
from onnxpress.passes.report import PassRecord, Report

logger = logging.getLogger(__name__)

#: the pass whose pinned shapes can make a branch unrunnable (``_blame``)
STATIC_SHAPES = "static-shapes"
#: models with more weight bytes than this are not kept in memory for the numeric check
CHECK_MAX_BYTES = 1 << 30


class PassManager:
    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        verify: bool = True,
        validate: bool = True,
        check: bool = False,
        check_data: CalibrationData | None = None,
        check_batches: int = 2,
        tolerance: float = 1e-4,
        atol: float = 1e-6,
        input_shapes: dict[str, tuple[int, ...]] | None = None,
        dims: dict[str, int] | None = None,
        progress: bool | None = None,
        registry: PassRegistry | None = None,
        target: str | None = None,
    ) -> None:
        """Args:
        verify: run ``verify()`` after every pass; a broken invariant stops the run.
        validate: the result must pass onnx.checker and load in ONNX Runtime wherever the
            input did; else the pipeline is run again from a copy of the input, validating
            after each pass, to name the pass that broke it (``PassFailedError``, exit 3).
        check: run the input and the result on sample inputs (``check_data``, else random
            inputs) and compare outputs; an output whose max |diff| exceeds ``atol`` +
            ``tolerance`` x its largest magnitude fails.
        check_data: also the data of passes that need some (``quantize``'s calibration)
            and were given none; its files are split along each input's sample axis.
        input_shapes, dims: full shapes of some inputs and symbolic dims by name, for the
            random inputs of the check (``backends.inputs``).
        progress: show a progress bar (None: only when stderr is a terminal).
        registry, target: what a pass composing others (``lowrank(compensate=...)``) has
            its pipeline option built with (default: the default registry and target).
        """
        self.passes = list(passes)
        self.verify = verify
        self.validate = validate
        self.check = check
        self.check_data = check_data
        self.check_batches = check_batches
        self.tolerance = tolerance
        self.atol = atol
        self.input_shapes = input_shapes
        self.dims = dims or {}
        self.progress = progress
        self.registry = registry
        self.target = target

    def run(self, model: ir.Model) -> Report:
        """Run the passes on ``model`` in place and return the report."""
        self._held: tempfile.TemporaryDirectory | None = None  # a large input's snapshot
        try:
            # LAPACK's blocked factorizations (eigh, cholesky, solve) round differently with
            # the number of BLAS threads, which would make lossy passes' bytes depend on the
            # machine's cores; one thread gives the same bytes everywhere
            with threadpool_limits(limits=1, user_api="blas"):
                return self._run(model)
        finally:
            if self._held is not None:
                self._held.cleanup()
                self._held = None

    def _run(self, model: ir.Model) -> Report:
        report = Report(pipeline=format_pipeline(self.passes))
        if self.verify:
            try:
                verify(model)
            except VerificationError as error:  # named as the input's, not the first pass's
                raise BadInputError(f"the input model is invalid: {error}") from None
        inputs = ModelInputs.of(model, self.input_shapes)
        inputs.check_dims(self.dims)
        if self.check_data is not None:
            self.check_data = self.check_data.for_model(inputs)
        report.notes.extend(model.meta.get(LOAD_NOTES, []))
        unknown = unknown_ops(model)
        if unknown:
            listed = ", ".join(f"{op} x{n}" for op, n in sorted(unknown.items()))
            report.notes.append(f"ops no ONNX schema defines are left untouched: {listed}")
        validators = self._validators(model, report) if self.validate else ()
        original = self._snapshot(model, report) if self.check or validators else None
        large = parameter_bytes(model) >= IN_MEMORY_BYTES
        hidden = None if self.progress is None else not self.progress  # None: tty decides
        bar = tqdm(self.passes, desc="passes", unit="pass", disable=hidden, leave=False)
        for index, current in enumerate(bar):
            bar.set_postfix_str(current.name)
            current = with_passes(self._prepared(current), self._build_inner)
            try:
                report.passes.append(self._run_one(current, model))
                if large:
                    give_back_memory()
            except BadInputError as error:
                # the user's input, unless an earlier pass left a model the input was not
                # (ONNX Runtime then refuses what this pass runs): that is a bug of ours
                found = problems(model, validators) if index and validators else {}
                if found:
                    raise self._blame(original, validators, found) from None
                if not isinstance(error, RuntimeRefusedError):
                    raise
                if error.loading and RUNTIME in validators:  # a model the pass built
                    raise PassFailedError(f"pass {current.name!r}: {error}") from None
                raise BadInputError(f"pass {current.name!r}: {error}") from None
        if validators:
            found = problems(model, validators)
            if found:
                raise self._blame(original, validators, found)
        if original is not None and self.check:
            self._check(original, model, report, inputs)
        return report

    def _validators(self, model: ir.Model, report: Report) -> tuple[str, ...]:
        """The validators the input model passes: the output is held to those."""
        if not checkable(model):
            report.notes.append("output validation skipped: the model's weights exceed 1 GiB")
            return ()
        found = problems(model)
        if RUNTIME in found:  # a custom op ORT lacks, or a model no runtime could load
            invalid = inference_error(model)
            if invalid:
                raise BadInputError(f"the input model is invalid: {invalid} (ONNX Runtime "
                                    "refuses it too)")
            if CHECKER in found:  # nothing left to hold the output to
                raise BadInputError(
                    f"the input model fails onnx.checker ({found[CHECKER]}) and does not load "
                    f"in ONNX Runtime ({found[RUNTIME]}); fix the model")
        for name, why in found.items():
            report.notes.append(f"the input model fails {name} ({why}): the output is not "
                                f"held to it")
        return tuple(v for v in VALIDATORS if v not in found)

    def _blame(self, original: bytes | str | None, validators: tuple[str, ...],
               found: dict[str, str]) -> OnnxpressError:
        """Which pass broke the model: the pipeline again from the input, validating after
        each pass (the passes are deterministic; a rerun that stays valid names them all).
        Where the same pipeline without ``static-shapes`` stays valid, the shapes it pinned
        are the cause, not a pass: silero-vad pinned to 512 samples cannot run its 8 kHz
        branch (the original fails on such inputs too), and once cleanup folds that branch
        ONNX Runtime refuses the file. That is the user's choice to make, and said so."""
        name, why = next(iter(found.items()))
        culprit = self._replay(original, validators, self.passes)
        pinned = [p for p in self.passes if p.name == STATIC_SHAPES]
        if culprit is not None and pinned and self._replay(
                original, validators, [p for p in self.passes if p.name != STATIC_SHAPES]
        ) is None:
            return BadInputError(
                f"the shapes static-shapes pinned make part of the model unrunnable: after "
                f"{culprit!r}, {name} rejects it ({why}); pin shapes every If branch accepts "
                "(static-shapes(dims=...), --calibration) or compile without static-shapes")
        who = (f"pass {culprit!r}" if culprit is not None else
               "the pipeline " + format_pipeline(self.passes))
        return PassFailedError(f"{who} wrote a model that {name} rejects (the input passed): "
                               f"{why}")

    def _replay(self, original: bytes | str | None, validators: tuple[str, ...],
                passes: Sequence[Pass]) -> str | None:
        """The first of ``passes``, run from the input, after which a validator fails."""
        if original is None:
            return None
        replay = ir.serde.deserialize_model(_proto(original))
        for current in passes:
            with_passes(self._prepared(current), self._build_inner)(replay)
            if problems(replay, validators):
                return current.name
        return None

    def _prepared(self, current: Pass) -> Pass:
        return current if self.check_data is None else with_data(current, self.check_data)

    def _build_inner(self, text: str) -> list[Pass]:
        self.registry = self.registry or PassRegistry.default()
        return [self._prepared(p) for p in parse_pipeline(text, self.registry, self.target)]

    def _run_one(self, current: Pass, model: ir.Model) -> PassRecord:
        nodes, params, size = count_nodes(model), count_parameters(model), parameter_bytes(model)
        start = time.perf_counter()
        try:
            result = current(model)
        except (BadInputError, CheckFailedError):
            raise  # the user's to fix (missing data, a lint's finding): one line, exit 2 or 1
        except Exception as error:
            raise PassFailedError(f"pass {current.name!r} failed: {error}") from error
        seconds = time.perf_counter() - start
        if self.verify:
            try:
                verify(model)
            except VerificationError as error:
                raise PassFailedError(f"pass {current.name!r} broke the IR: {error}") from error
        stats = result.stats if isinstance(result, PassStats) else {}
        notes = list(result.notes) if isinstance(result, PassStats) else []
        unvisited = _subgraph_nodes(model) if not current.visits_subgraphs else 0
        if unvisited:
            notes.append(f"{current.name}: {unvisited} nodes inside If/Loop/Scan bodies were "
                         "not visited")
        logger.info("%s: %.3fs, %d -> %d nodes", current.name, seconds, nodes, count_nodes(model))
        return PassRecord(
            name=current.name,
            spec=current.spec(),
            seconds=seconds,
            modified=result.modified,
            nodes_before=nodes,
            nodes_after=count_nodes(model),
            parameters_before=params,
            parameters_after=count_parameters(model),
            bytes_before=size,
            bytes_after=parameter_bytes(model),
            stats=stats,
            notes=notes,
        )

    def _snapshot(self, model: ir.Model, report: Report) -> bytes | str | None:
        """The input as it was, for the check and for naming a pass that broke it: bytes,
        or past ``IN_MEMORY_BYTES`` a file with external data (in memory, SmolLM2's would
        be another 540 MB beside the IR for the whole run)."""
        weights = parameter_bytes(model)
        if weights > CHECK_MAX_BYTES:
            if self.check:  # refused before any work rather than skipped with success
                raise BadInputError(
                    f"--check: the model's {weights / 2**30:.1f} GiB of weights exceed the "
                    f"{CHECK_MAX_BYTES / 2**30:.0f} GiB the check keeps in memory; compile "
                    "without --check and compare the two files with `onnxpress compare`")
            return None
        if weights >= IN_MEMORY_BYTES:  # a copy of its own: the input may be overwritten
            self._held = scratch("input")
            return os.fspath(save(model, Path(self._held.name) / "input.onnx",
                                  external_data=True))
        # external weights read in: the check's session is made from bytes, and would
        # resolve their locations against the working directory (issue 22, C2)
        return to_proto(model).SerializeToString()

    def _check(self, original: bytes | str, model: ir.Model, report: Report,
               inputs: ModelInputs) -> None:
        reference, candidate = Runner(original), Runner(model)
        if self.check_data is not None:
            batches = self.check_data.take(self.check_batches)
            where = "the check data"
            if not batches:
                raise BadInputError("--check: the calibration data holds no samples, so "
                                    "nothing would be compared; give at least one sample, "
                                    "or no --calibration to check on random inputs")
        else:
            batches = [inputs.random(seed=s, dims=self.dims) for s in range(self.check_batches)]
            where = inputs.describe_random(self.dims)
        try:
            expected = [reference.run(b) for b in batches]
        except RuntimeRefusedError as error:
            raise BadInputError(
                f"the input model does not run on {where}: {error.reason}; "
                + ("check that the data fits the model's inputs" if self.check_data is not None
                   else "give --calibration data, --input-shape NAME=D,D,... or --dim NAME=N")
            ) from None
        for name, values in ((n, v) for want in expected for n, v in want.items()):
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise BadInputError(
                    f"--check: the input model itself gives NaN or infinity for output "
                    f"{name!r} on {where}, which cannot be compared; give --calibration data "
                    "on which it computes finite numbers")
        try:
            got = [candidate.run(b) for b in batches]
        except RuntimeRefusedError as error:  # the input ran on these: the pipeline's doing
            raise PassFailedError(f"the pipeline {format_pipeline(self.passes)} wrote a model "
                                  f"that does not run on {where}, where the input did: "
                                  f"{error.reason}") from None
        report.check = merge_checks(
            compare_outputs(want, out, tolerance=self.tolerance, atol=self.atol)
            for want, out in zip(expected, got)
        )
        report.check_tolerance = self.tolerance
        report.check_atol = self.atol


def _proto(data: bytes | str) -> onnx.ModelProto:
    if isinstance(data, str):  # a snapshot's file
        return onnx.load(data)
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    return proto


def _subgraph_nodes(model: ir.Model) -> int:
    return sum(1 for node in model.graph.all_nodes() if node.graph is not model.graph)
