"""``bench_models`` times the session a deployment opens: without ``PRECISE_INT8``, the
conversion the numeric checks use, which sends ONNX Runtime's integer MatMuls to slow
kernels (a 128x384x1536 MatMulIntegerToFloat ran 5.7x slower with it on a Xeon with AMX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION

from onnxpress.backends import bench
from onnxpress.backends.ort_runner import PRECISE_INT8, Runner


def _model(path: Path) -> Path:
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _precise(runner: Runner) -> str | None:
    try:
        return runner.session.get_session_options().get_session_config_entry(PRECISE_INT8[0])
    except RuntimeError:  # ORT: "does not have configuration with key"
        return None


def test_benchmarks_time_the_session_a_deployment_opens(monkeypatch, tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    opened: list[Runner] = []

    class Recording(Runner):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(bench, "Runner", Recording)
    (row,) = bench.bench_models([("m", str(model))], repeats=2, warmup=1, progress=False)
    assert row.median_ms > 0 and len(opened) == 1
    assert _precise(opened[0]) != PRECISE_INT8[1]
    assert _precise(Runner(str(model))) == PRECISE_INT8[1]  # what the checks still use
