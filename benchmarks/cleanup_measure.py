"""What the cleanup benchmark measures on a tool's output: graph statistics, op histograms,
sizes, and ONNX Runtime outputs against the input model's."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
MODELS = ("vit_s16", "resnet50", "bert")
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


# --------------------------------------------------------------------------- export


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dir_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _count_nodes(graph: Any) -> int:
    """Nodes of a GraphProto, subgraph bodies included."""
    n = 0
    for node in graph.node:
        n += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                n += _count_nodes(attr.g)
            for g in attr.graphs:
                n += _count_nodes(g)
    return n


def graph_stats(path: Path) -> dict[str, Any]:
    """Node count, op histogram, initializer/function counts and opset of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    hist = collections.Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
        for n in m.graph.node
    )
    return {
        "nodes": _count_nodes(m.graph),
        "nodes_no_const": _count_nodes(m.graph) - hist.get("Constant", 0),
        "ops": dict(sorted(hist.items())),
        "initializers": len(m.graph.initializer),
        "functions": len(m.functions),
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
    }


def hist_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """{op: [count before, count after]} for the op types whose count changed."""
    return {
        op: [before.get(op, 0), after.get(op, 0)]
        for op in sorted(set(before) | set(after))
        if before.get(op, 0) != after.get(op, 0)
    }


def make_inputs(path: Path, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Fixed-seed random inputs for an ONNX model's graph inputs (symbolic dims -> ``batch``).

    float: standard normal; ``*input_ids*``: ints in [1, vocab) (vocab from the model name's
    config, 30522 for BERT); ``*mask*``: ones with padding zeros at the end of later rows;
    other ints: zeros.
    """
    import numpy as np
    import onnx
    from onnx import helper

    rng = np.random.default_rng(seed)
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds: dict[str, Any] = {}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "input_ids" in inp.name:
            feeds[inp.name] = rng.integers(1, 30522, size=shape).astype(dtype)
        elif "mask" in inp.name:
            mask = np.ones(shape, dtype=dtype)
            if len(shape) == 2:
                for i in range(1, shape[0]):
                    mask[i, shape[1] - (shape[1] // 4) * (1 + (i - 1) % 3) :] = 0
            feeds[inp.name] = mask
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def run_ort(path: Path, feeds: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run a model with ONNX Runtime CPU, graph optimisations off; {output name: array}."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, outs))


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Max |diff| over outputs (matched by name, else by position) and relative to max |ref|."""
    import numpy as np

    if list(ref) != list(got) and len(ref) == len(got) and not set(ref) <= set(got):
        got = dict(zip(ref, got.values()))
    worst, scale, per = 0.0, 0.0, {}
    for name, r in ref.items():
        if name not in got:
            return {"error": f"output {name!r} missing"}
        g = got[name]
        if g.shape != r.shape:
            return {"error": f"output {name!r} shape {g.shape} != {r.shape}"}
        d = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if r.size else 0.0
        if not np.all(np.isfinite(g) == np.isfinite(r)):
            d = float("inf")
        per[name] = d
        worst = max(worst, d)
        scale = max(scale, float(np.max(np.abs(r[np.isfinite(r)]))) if r.size else 0.0)
    return {
        "max_abs_diff": worst,
        "max_rel_diff": worst / scale if scale else worst,
        "per_output": per,
    }


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# --------------------------------------------------------------------------- driver
