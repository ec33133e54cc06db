"""A model with more than 2 GB of weights loads, runs ``cleanup``, saves and reloads with
peak memory below 1.5x the weights' size: weights stay memory-mapped, never copied whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

WIDTH = 8192  # one [8192, 8192] float32 weight is 256 MiB
LAYERS = 9  # 2.25 GiB in all
JOB = Path(__file__).parents[1] / "large_model_job.py"


def _external(name: str, shape: tuple[int, ...], location: str, offset: int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
    tensor.data_location = TensorProto.EXTERNAL
    length = int(np.prod(shape)) * 4
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _write_model(folder: Path) -> tuple[Path, int]:
    """A chain of MatMul -> Identity -> Relu whose weights live in a sparse data file."""
    data_name = "weights.bin"
    nodes, inits, x = [], [], "x"
    offset = 0
    for layer in range(LAYERS):
        inits.append(_external(f"w{layer}", (WIDTH, WIDTH), data_name, offset))
        offset += WIDTH * WIDTH * 4
        nodes += [
            helper.make_node("MatMul", [x, f"w{layer}"], [f"mm{layer}"]),
            helper.make_node("Identity", [f"mm{layer}"], [f"id{layer}"]),
            helper.make_node("Relu", [f"id{layer}"], [f"h{layer}"]),
        ]
        x = f"h{layer}"
    graph = helper.make_graph(
        nodes, "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(folder / data_name, "wb") as stream:
        stream.truncate(offset)  # sparse: costs no disk until written
    path = folder / "large.onnx"
    onnx.save(model, path)
    return path, offset


@pytest.mark.slow
def test_large_model_round_trip_stays_within_memory(tmp_path: Path) -> None:
    source, weight_bytes = _write_model(tmp_path)
    assert weight_bytes > 2**31
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "large.onnx"
    completed = subprocess.run(
        [sys.executable, os.fspath(JOB), os.fspath(source), os.fspath(target)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["weight_bytes"] == weight_bytes
    assert seen["nodes_before"] == 3 * LAYERS
    assert seen["nodes_after"] == 2 * LAYERS  # the Identities are gone
    assert seen["reloaded_nodes"] == 2 * LAYERS
    assert (out_dir / "large.onnx.data").stat().st_size == weight_bytes
    assert seen["peak_rss_bytes"] < 1.5 * weight_bytes, seen
