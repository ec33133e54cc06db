"""Fuzzed inputs never crash the CLI (issue 22): hypothesis mutates five small valid models
(an MLP, a Conv net, an If with a scalar bool condition, an MLP with its weights in
``w.bin``, an integer-input Gather), their calibration archives and their folders
(truncation, bit flips, wrong dtypes and ranks, initializers whose dims no longer match
their data, other ops, hostile external-data locations: ``../outside.bin``, absolute paths,
a symlink or a FIFO beside the model; NaN, missing, extra or empty calibration arrays),
then runs ``compile`` (with and without ``--check``, ``--calibration``, ``--report``),
``inspect`` and ``compare`` on them, in-process, from a third folder. Every command:

- exits 0, 1 or 2 (3 is "internal error", a bug of ours, never the input's fault);
- prints no traceback; a failure is exactly one ``onnxpress: error: ...`` line on stderr,
  and a success prints nothing on stderr but onnxpress's own log lines (no third-party
  warnings: DESIGN.md keeps those for ``--debug``);
- with exit 0, ``compile`` leaves an output that passes ``onnx.checker`` (full check) and
  loads in ONNX Runtime, whose external data is its own ``out.onnx.data`` alone; a failed
  ``compile`` leaves no output model;
- changes no file but its intended outputs (``out.onnx``, ``out.onnx.data``, the report):
  the inputs keep their bytes, nothing appears, and nothing in the sibling ``outside``
  folder, the working directory or ``/etc/passwd`` is touched.

The CLI runs as a process would: the root logger and Python's warning filters are reset
for each command, so log lines and warnings reach stderr as they would in a shell.

CI runs ``CI_EXAMPLES`` (500) drawn cases, derandomized (the same cases on every run), and
the fixed ``@example`` cases, one per known kind of defect; ``ONNXPRESS_FUZZ_EXAMPLES=3000``
runs more locally. A failure prints the ``Case`` (its repr rebuilds the job:
``fuzz_models.write_job(case, folder)``) and the command.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from fuzz_models import (
    CALIBRATION_MUTATIONS,
    DTYPES,
    HOSTILE_LOCATIONS,
    OPS,
    SECRET,
    SEEDS,
    Case,
    Job,
    write_job,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from onnxpress.cli import main

#: drawn cases per CI run (besides the @example ones): 30-50 s on a 2-core machine, about
#: 0.06-0.1 s a case (0.3 s for one whose compile succeeds and is then checked)
CI_EXAMPLES = 500
EXAMPLES = int(os.environ.get("ONNXPRESS_FUZZ_EXAMPLES", CI_EXAMPLES))
#: one command's limit: a read of a FIFO would otherwise hang the run
COMMAND_SECONDS = 30
#: files outside every job folder whose bytes must survive (read, never written)
SYSTEM_FILES = [p for p in (Path("/etc/passwd"),) if p.exists()]


# -- strategies ---------------------------------------------------------------------------

_index = st.integers(0, 40)
_fraction = st.integers(0, 999).map(lambda n: n / 1000)
_flips = st.lists(st.tuples(_fraction, st.integers(1, 255)), min_size=1, max_size=8).map(tuple)
_bytes_mutation = st.one_of(st.tuples(st.just("truncate"), _fraction),
                            st.tuples(st.just("flip"), _flips))


def _external_mutation(seed: str) -> st.SearchStrategy[tuple]:
    """A weight's data moved to a drawn location, its offset and length kept ("") or not."""
    locations = HOSTILE_LOCATIONS + (["w.bin"] if SEEDS[seed][1] else [])
    offsets = st.sampled_from(["", "", "0", "3", "-4", "99999", "abc"])
    lengths = st.sampled_from(["", "", "0", "4", "999999999", "-1", "x"])
    return st.tuples(st.just("external"), _index, st.sampled_from(locations), offsets, lengths)


def _model_mutation(seed: str) -> st.SearchStrategy[tuple]:
    dtype, how = st.sampled_from(DTYPES), st.sampled_from
    return st.one_of(
        st.tuples(st.just("input_dtype"), _index, dtype),
        st.tuples(st.just("output_dtype"), _index, dtype),
        st.tuples(st.just("input_rank"), _index,
                  how(["add", "drop", "scalar", "unknown", "zero", "negative", "pin"])),
        st.tuples(st.just("init_dims"), _index,
                  how(["grow", "shrink", "add", "drop", "zero", "negative", "swap"])),
        st.tuples(st.just("init_dtype"), _index, dtype),
        st.tuples(st.just("op_type"), _index, how(OPS)),
        st.tuples(st.just("domain"), _index, how(["com.microsoft", "ai.onnx.ml", "bogus"])),
        st.tuples(st.sampled_from(["dangling_input", "drop_input", "duplicate_output",
                                   "reorder"]), _index),
        st.tuples(st.just("opset"), how([1, 6, 11, 13, 21, 23, 99, -1])),
        st.tuples(st.just("ir_version"), how([0, 1, 3, 7, 11, 12, 99])),
        _external_mutation(seed),
    )


_calibration_args = {
    "dtype": st.sampled_from(["float64", "float16", "int32", "int64", "uint8", "bool", "<U3",
                              "complex64"]),
    "rank": st.sampled_from(["add", "drop", "scalar", "flat", "stack"]),
    "extra": st.sampled_from(["extra", "label", "x "]),
    "value": st.sampled_from(["nan", "inf", "big", "negative", "huge"]),
    "truncate": _fraction,
    "flip": _flips,
    "not_npz": st.sampled_from(["", "not an archive", "PK\x03\x04garbage"]),
}


@st.composite
def _calibration_mutation(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(CALIBRATION_MUTATIONS))
    arg = draw(_calibration_args[kind]) if kind in _calibration_args else None
    return (kind, draw(_index), arg)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A seed with one kind of defect (now and then two, or none), and the commands' flags."""
    seed = draw(st.sampled_from(sorted(SEEDS)))
    focus = draw(st.sampled_from(["model", "model", "model", "bytes", "calibration",
                                  "calibration", "sidecar", "planted", "mixed", "none"]))
    fields: dict = {}
    if focus in ("model", "mixed"):
        fields["model"] = tuple(draw(st.lists(_model_mutation(seed), min_size=1, max_size=2)))
    if focus == "bytes":
        fields["model_bytes"] = draw(_bytes_mutation)
    if focus == "sidecar" and SEEDS[seed][1]:
        fields["sidecar_bytes"] = draw(_bytes_mutation)
    elif focus == "sidecar":  # a seed without one: a weight moved out of the model file
        fields["model"] = (draw(_external_mutation(seed)),)
    if focus in ("calibration", "mixed"):
        fields["calibration"] = draw(_calibration_mutation())
    if focus == "planted":
        fields["planted"] = draw(st.sampled_from(["out.onnx", "out.onnx.data"]))
    return Case(seed, **fields,
                passes=draw(st.sampled_from([None, "cleanup", "int8", "fuse-for-ort"])),
                check=draw(st.booleans()), use_calibration=draw(st.booleans()),
                report=draw(st.booleans()),
                compare=draw(st.sampled_from(["ref,model", "model,ref"])))


# -- running one command as a process would -----------------------------------------------

class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException, so that the CLI's handlers let it through."""


def _on_alarm(signum, frame):
    raise CaseTimeout(f"a command ran past {COMMAND_SECONDS} s")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _like_a_process(cwd: Path) -> Iterator[None]:
    """The root logger without handlers (the CLI's basicConfig installs its own, as in a
    fresh process), Python's default warning filters printing to stderr, ``cwd`` as the
    working directory and an alarm against hangs."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, COMMAND_SECONDS)
    try:
        with contextlib.chdir(cwd), warnings.catch_warnings():
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                             ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _show_warning
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        root.handlers, root.level = handlers, level


def _run(argv: list[str], cwd: Path, capfd: pytest.CaptureFixture) -> tuple[int, str, str]:
    capfd.readouterr()
    with _like_a_process(cwd):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 2
    captured = capfd.readouterr()
    return code, captured.out, captured.err


# -- what must hold -----------------------------------------------------------------------

class FuzzFailure(AssertionError):
    """A broken property, with what a reproduction needs."""

    def __init__(self, kind: str, case: Case, argv: list[str], code: int, err: str,
                 detail: str = "") -> None:
        self.kind, self.case, self.argv, self.code, self.err = kind, case, argv, code, err
        super().__init__(f"{kind}: {detail}\n  case: {case!r}\n  command: onnxpress "
                         f"{' '.join(argv)}\n  exit {code}, stderr:\n{err}")


def _snapshot(paths: list[Path]) -> dict[str, str]:
    """Every path under ``paths`` (links not followed): a regular file's hash, a link's
    target, or its kind."""
    found: dict[str, str] = {}
    for top in paths:
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                found[str(path)] = "-> " + os.readlink(path)
            else:
                found[str(path)] = "dir" if stat.S_ISDIR(mode) else f"mode {mode:o}"
    return found


def _external_locations(model: onnx.ModelProto) -> set[str]:
    graphs = [model.graph]
    for graph in graphs:
        graphs.extend(sub for node in graph.node for attr in node.attribute
                      for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs])
    tensors = [t for g in graphs for t in g.initializer]
    tensors += [a.t for g in graphs for n in g.node for a in n.attribute if a.HasField("t")]
    return {e.value for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL
            for e in t.external_data if e.key == "location"}


def _checker_level(path: Path) -> bool | None:
    """True: the model passes onnx's full check; False: its plain check; None: neither."""
    for full in (True, False):
        try:
            onnx.checker.check_model(str(path), full_check=full)
            return full
        except Exception:  # noqa: BLE001 - any complaint: try the lesser check
            continue
    return None


def _session(path: Path) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _loads_in_ort(path: Path) -> bool:
    try:
        _session(path)
    except Exception:  # noqa: BLE001 - any refusal
        return False
    return True


def _output_problem(out: Path, model: Path) -> str | None:
    """Why the compiled model does not load, or None. It is held to what its input passes:
    the onnx.checker level (an exporter's quirk the checker rejects stays the input's) and
    ONNX Runtime (an old opset this ONNX Runtime has no kernels for, a custom op; the input
    passing neither is refused)."""
    level, runs = _checker_level(model), _loads_in_ort(model)
    if level is None and not runs:
        return "exit 0 for an input that fails both onnx.checker and ONNX Runtime"
    try:
        locations = _external_locations(onnx.load(out, load_external_data=False))
        if not locations <= {out.name + ".data"}:
            return f"the output's external data lives in {sorted(locations)}"
        if level is not None:
            onnx.checker.check_model(str(out), full_check=level)
        if runs:
            _session(out)
    except Exception as error:  # noqa: BLE001 - any failure to load is the finding
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
    return None


def _leak(job: Job) -> str | None:
    for path in (job.out, job.out.with_name(job.out.name + ".data")):
        if path.is_file() and SECRET[:16] in path.read_bytes():
            return f"{path.name} holds bytes of a file outside the job folder"
    return None


def _stderr_problem(code: int, err: str) -> str | None:
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err:
        return "a traceback on stderr"
    if code == 0:
        foreign = [line for line in lines if not line.startswith(("WARNING onnxpress.",
                                                                  "INFO onnxpress."))]
        return f"{len(foreign)} line(s) not onnxpress's own on stderr" if foreign else None
    if len(lines) != 1 or not lines[0].startswith("onnxpress: error: "):
        return f"{len(lines)} stderr lines, not one 'onnxpress: error: ...' line"
    return None


def _commands(case: Case, job: Job) -> list[tuple[str, list[str]]]:
    compile_ = ["compile", str(job.model), "-o", str(job.out)]
    if case.passes:
        compile_ += ["--passes", case.passes]
    if case.check:
        compile_.append("--check")
    if case.use_calibration:
        compile_ += ["--calibration", str(job.calibration)]
    if case.report:
        compile_ += ["--report", str(job.report)]
    a, b = (job.model, job.ref) if case.compare == "model,ref" else (job.ref, job.model)
    compare = ["compare", str(a), str(b)]
    if case.use_calibration:
        compare += ["--data", str(job.calibration)]
    return [("compile", compile_), ("inspect", ["inspect", str(job.model)]),
            ("compare", compare)]


def _may_refuse(case: Case, command: str, code: int) -> bool:
    """Where a valid seed may still exit non-zero: ``--check`` of ``int8`` may find the
    quantized outputs too far off (1), and ``int8`` needs calibration data (2)."""
    if command != "compile" or case.passes != "int8":
        return False
    return (code == 1 and case.check) or (code == 2 and not case.use_calibration)


def check_case(case: Case, root: Path, capfd: pytest.CaptureFixture,
               collect: list[FuzzFailure] | None = None) -> None:
    """Write ``case``'s job under ``root`` (empty) and run its commands; raise FuzzFailure
    at the first broken property, or with ``collect``, add each to it and go on."""
    job = write_job(case, root)
    commands = _commands(case, job)
    while commands:
        name, argv = commands.pop(0)
        try:
            commands += _check_command(case, job, name, argv, capfd)
        except FuzzFailure as failure:
            if collect is None:
                raise
            collect.append(failure)


def _check_command(case: Case, job: Job, name: str, argv: list[str],
                   capfd: pytest.CaptureFixture) -> list[tuple[str, list[str]]]:
    """Run one command and check it; return the commands its success calls for."""
    watched = [job.root, *SYSTEM_FILES]
    before = _snapshot(watched)
    shown = [a.replace(str(job.root), "$ROOT") for a in argv]
    try:
        code, out, err = _run(argv, job.cwd, capfd)
    except CaseTimeout as error:
        raise FuzzFailure("hang", case, shown, -1, "", str(error)) from None
    err = err.replace(str(job.root), "$ROOT")

    def fail(kind: str, detail: str = "") -> None:
        raise FuzzFailure(kind, case, shown, code, err, detail)

    if code not in (0, 1, 2):
        fail(f"exit {code}", "3 is an internal error" if code == 3 else "")
    problem = _stderr_problem(code, err)
    if problem:
        fail("stderr", problem)
    if code == 0 and not out.strip():
        fail("silent success", "exit 0 with nothing on stdout")
    intended = {str(job.out), str(job.out) + ".data", str(job.report)} \
        if name == "compile" else set()
    after = _snapshot(watched)
    touched = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    if touched - intended:
        fail("files touched", ", ".join(sorted(p.replace(str(job.root), "$ROOT")
                                               for p in touched - intended)))
    if name == "compile" and code != 0 and str(job.out) in touched:
        fail("output after failure", f"exit {code} but {job.out.name} was written")
    if code == 0 and case.must_refuse:
        fail("hostile external data accepted", "exit 0 where a tensor's data location is "
             "outside the model's folder, not a regular file or missing")
    if code == 0 and name == "compile" and case.planted:
        fail("planted link accepted", f"exit 0 with a symlink planted at {case.planted}")
    if not case.mutated and code != 0 and not _may_refuse(case, name, code):
        fail("a usable job refused", f"{name} exited {code} where the inputs are usable")
    if name != "compile" or code != 0:
        return []
    problem = _leak(job)
    if problem:
        fail("secret in the output", problem)
    problem = _output_problem(job.out, job.model)
    if problem:
        fail("output does not load", problem)
    compare = ["compare", str(job.model), str(job.out)]
    return [("compare-output", compare + (["--data", str(job.calibration)]
                                          if case.use_calibration else []))]


# -- the property -------------------------------------------------------------------------

@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          print_blob=False, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow])
@given(case=cases())
# one of each known kind of defect, run on every CI run whatever the draw
@example(case=Case("if", calibration=("rank", 0, "stack"), check=True))
@example(case=Case("external", sidecar_bytes=("truncate", 0.5), use_calibration=False))
@example(case=Case("external", model=(("external", 0, "w.bin", "99999", ""),)))
@example(case=Case("mlp", model=(("external", 0, "../outside.bin", "", ""),), check=True))
@example(case=Case("conv", model=(("external", 3, "link.bin", "", ""),), passes="int8"))
@example(case=Case("gather", model=(("external", 0, "pipe.bin", "", ""),)))
@example(case=Case("if", model=(("external", 1, "{outside}/secret.bin", "", ""),)))
@example(case=Case("mlp", model=(("init_dims", 0, "grow"),), passes=None))
@example(case=Case("gather", model=(("init_dtype", 0, 10),), use_calibration=False))
@example(case=Case("conv", model=(("opset", 99),), passes=None, use_calibration=False))
@example(case=Case("mlp", model=(("input_dtype", 0, 8),), passes=None, check=True))
@example(case=Case("gather", calibration=("value", 0, "huge"), passes=None, check=True))
@example(case=Case("mlp", calibration=("missing", 0, None), passes="int8", check=True))
@example(case=Case("mlp", planted="out.onnx.data"))
def test_fuzzed_models_and_data_never_crash_the_cli(case: Case, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    check_case(case, root, capfd)
    shutil.rmtree(root)  # kept when the case fails, for a look


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_the_seeds_are_valid(seed: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Unmutated, each seed compiles (with --check on its calibration data), inspects and
    compares cleanly: the fuzz test starts from models the CLI accepts."""
    check_case(Case(seed, passes=None, check=True, report=True), tmp_path, capfd)
