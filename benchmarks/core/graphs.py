"""What the suites read off a model file: node counts and op histograms (subgraphs
included), sizes with external data, content hashes, and the graph ONNX Runtime runs."""

from __future__ import annotations

import collections
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import onnx


def _count_nodes(graph: onnx.GraphProto) -> int:
    """Nodes of a graph, subgraph bodies included."""
    count = 0
    for node in graph.node:
        count += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                count += _count_nodes(attr.g)
            count += sum(_count_nodes(g) for g in attr.graphs)
    return count


def graph_stats(path: Path) -> dict[str, Any]:
    """Node count, op histogram (``domain::Op`` outside the default domain), initializer and
    function counts and opsets of an ONNX file."""
    model = onnx.load(str(path), load_external_data=False)
    hist = collections.Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node)
    nodes = _count_nodes(model.graph)
    return {"nodes": nodes, "nodes_no_const": nodes - hist.get("Constant", 0),
            "ops": dict(sorted(hist.items())), "initializers": len(model.graph.initializer),
            "functions": len(model.functions),
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import}}


def hist_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """{op: [count before, count after]} for the op types whose count changed."""
    return {op: [before.get(op, 0), after.get(op, 0)] for op in sorted(set(before) | set(after))
            if before.get(op, 0) != after.get(op, 0)}


def op_count(path: Path, op: str) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type == op for node in graph.node)


def file_size(path: Path) -> int:
    """Bytes of the model file and of the external data files it names."""
    proto = onnx.load(str(path), load_external_data=False)
    names = {e.value for t in proto.graph.initializer for e in t.external_data
             if e.key == "location"}
    return path.stat().st_size + sum((path.parent / n).stat().st_size for n in names)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dir_hash(path: Path) -> str:
    """One digest of every file below ``path`` (names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            digest.update(p.name.encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def ort_graph(path: Path) -> collections.Counter[str] | None:
    """The op types of the graph ONNX Runtime runs at its default level (ORT_ENABLE_ALL);
    None if it does not load."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "ort.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - ORT raises its own classes for every load failure
            return None
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return collections.Counter(node.op_type for node in graph.node)
