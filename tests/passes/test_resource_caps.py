"""Tiny models that ask for huge values compile without computing them (issue 22, R1 and
R2; the models are :mod:`onnxpress.models.resource_cases`): fold-constants leaves the node
to the runtime and a note gives its size against the cap, shape inference leaves data
propagation off where ONNX would spell out a huge value and a note says so; exit 0, the
output passes onnx.checker, ONNX Runtime loads it, and it computes what the input did.

Memory and time are measured by the ``resource_cases`` benchmark, not asserted here. The
cases compile in a child process whose address space is capped, so that a regression fails
with a MemoryError instead of taking the machine (some would take 16 GiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import run_ort

import onnxpress
from onnxpress.cli import main
from onnxpress.models.resource_cases import CASES, Case, expand
from onnxpress.passes.cleanup import FoldConstants

PIPELINES = {"default": [], "fuse-for-ort": ["--passes", "fuse-for-ort"],
             "cleanup,fuse-for-ort": ["--passes", "cleanup,fuse-for-ort"]}
#: the child's address space: far above a compile of these (about 0.5 GiB of it, with two
#: malloc arenas however many threads ONNX Runtime starts), below the 16 GiB the largest
#: results would take
_CAP = 8 << 30
_CHILD = f"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({_CAP}, {_CAP}))
from onnxpress.cli import main
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    print(f"@@ exit {{code}}", flush=True)
"""


def _compile_all(case: Case, folder: Path) -> tuple[dict[str, tuple[int, str]], str]:
    """Each pipeline's exit code and printed text, and the child's stderr."""
    source = folder / f"{case.name}.onnx"
    onnx.save(case.build(), source)
    argvs = [["compile", str(source), "-o", str(folder / f"{name}.onnx"), *extra]
             for name, extra in PIPELINES.items()]
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argvs)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, MALLOC_ARENA_MAX="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = proc.stdout.split("@@ exit ")
    runs = {name: (int(part.split("\n", 1)[0]), printed)
            for name, printed, part in zip(PIPELINES, parts, parts[1:])}
    return runs, proc.stderr


def _loads(path: Path) -> None:
    """onnx.checker (full) and ONNX Runtime accept it; ORT's own folding stays off, or it
    would compute the huge value at load."""
    onnx.checker.check_model(onnx.load(path), full_check=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_huge_result_is_left_to_the_runtime(case: Case, tmp_path: Path) -> None:
    runs, stderr = _compile_all(case, tmp_path)
    assert "bad_alloc" not in stderr and "Traceback" not in stderr, stderr
    huge = next(n for n in case.build().graph.node if n.op_type == case.op)
    for pipeline, (code, printed) in runs.items():
        folds = pipeline != "fuse-for-ort"  # the default pipeline starts with cleanup
        assert code == 0, (pipeline, printed)
        path = tmp_path / f"{pipeline}.onnx"
        _loads(path)
        nodes = onnx.load(path).graph.node
        if not any(n.op_type == case.op for n in nodes):
            # the Shape of Add(Range) folds from dims alone: nothing computed, same value
            assert case.name == "range_int64_2e8_shape" and folds, pipeline
            assert run_ort(path, {})["y"].tolist() == [case.elements]
            continue
        if folds:
            assert (f"fold-constants: {case.op} '{huge.name}' left unfolded for the runtime: "
                    f"its result would have {case.elements} elements (> 65536)") in printed
        if case.propagates:
            assert "shapes inferred without data propagation" in printed, pipeline
            assert f"a 1-D value of {case.elements} elements (> 1048576)" in printed


def test_a_result_over_the_cap_computes_what_the_input_did(tmp_path: Path, capsys) -> None:
    """Expand to [300, 300] (90,000 elements, over the 65,536 cap) stays an Expand, and ORT
    gives the same result from the output as from the input; under the cap it folds."""
    for shape, folded in (([300, 300], False), ([200, 200], True)):
        source, out = tmp_path / f"in{shape[0]}.onnx", tmp_path / f"out{shape[0]}.onnx"
        onnx.save(expand(shape), source)
        assert main(["compile", str(source), "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        ops = [n.op_type for n in onnx.load(out).graph.node]
        assert ops == ([] if folded else ["Expand"]), ops
        assert ("90000 elements (> 65536)" in printed) is not folded
        _loads(out)
        assert np.array_equal(run_ort(out, {})["y"], run_ort(source, {})["y"])


def test_the_cap_is_fold_constants_max_output_elements(tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(expand([300, 300]), source)
    passes = "fold-constants(max_output_elements=100000)"
    assert main(["compile", str(source), "-o", str(out), "--passes", passes]) == 0
    assert "left unfolded" not in capsys.readouterr().out
    assert not onnx.load(out).graph.node


def _one_node(op: str, constants: dict[str, np.ndarray], **attributes) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, list(constants), ["y"], name="big", **attributes)], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(array, name) for name, array in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=10)


_ONES = np.ones([1000, 1], np.float32)


@pytest.mark.parametrize("model", [
    _one_node("Pad", {"x": np.ones([2, 2], np.float32),
                      "pads": np.array([0, 0, 998, 998], np.int64)}),
    _one_node("Resize", {"x": np.ones([1, 1, 2, 2], np.float32), "": np.array([], np.float32),
                         "scales": np.array([1, 1, 500, 500], np.float32)}),
    _one_node("OneHot", {"i": np.arange(1000, dtype=np.int64), "depth": np.array(1000),
                         "values": np.array([0, 1], np.float32)}),
    _one_node("MatMul", {"a": _ONES, "b": _ONES.T.copy()}),
    _one_node("Add", {"a": _ONES, "b": _ONES.T.copy()}),
], ids=lambda model: model.graph.node[0].op_type)
def test_any_op_is_sized_by_its_onnx_shape_rule(model: onnx.ModelProto) -> None:
    """Ops other than the generators: ONNX's shape rule, fed the small constants, tells
    the result's size (a million elements here) before anything computes it."""
    ir_model = onnxpress.load(model)
    result = FoldConstants()(ir_model)
    assert [node.op_type for node in ir_model.graph] == [model.graph.node[0].op_type]
    assert len(result.notes) == 1 and "elements (> " in result.notes[0], result.notes
    assert int(result.notes[0].split("would have ")[1].split()[0]) >= 1000 * 1000
