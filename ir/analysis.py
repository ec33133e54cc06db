"""Read-only queries the passes share: constants, shapes, dtypes, sizes, opsets.

None of these read a tensor's bytes unless the caller asks for its values
(``constant_array``), so external, memory-mapped weights stay on disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir


def all_graphs(model_or_graph: ir.Model | ir.Graph) -> Iterator[ir.Graph]:
    """The main graph, then every subgraph (If/Loop/Scan bodies) nested in it."""
    graph = model_or_graph.graph if isinstance(model_or_graph, ir.Model) else model_or_graph
    yield graph
    yield from graph.subgraphs()


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and every subgraph."""
    return sum(1 for _ in model.graph.all_nodes())


def _tensor_numel(value: ir.Value) -> int:
    tensor = value.const_value
    if tensor is None:
        return 0
    return int(np.prod(tensor.shape.numpy(), dtype=np.int64)) if tensor.shape.dims else 1


def _initializers(model: ir.Model) -> Iterator[ir.Value]:
    for graph in all_graphs(model):
        yield from graph.initializers.values()


def count_parameters(model: ir.Model) -> int:
    """Elements stored in initializers (not Constant nodes), across all graphs."""
    return sum(_tensor_numel(v) for v in _initializers(model))


def parameter_bytes(model: ir.Model) -> int:
    """Bytes of initializer data, computed from dtype and shape without reading it."""
    total = 0
    for value in _initializers(model):
        tensor = value.const_value
        if tensor is not None:
            total += tensor.nbytes
    return total


def is_constant(value: ir.Value | None) -> bool:
    """True when the value's content is known: an initializer that no caller can override,
    or the output of a Constant node."""
    if value is None:
        return False
    if value.const_value is not None and not value.is_graph_input():
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain == ""


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's content as numpy when it is constant (reads the bytes), else None."""
    if not is_constant(value):
        return None
    assert value is not None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    assert producer is not None
    attr = producer.attributes.get("value")
    if attr is not None and attr.type == ir.AttributeType.TENSOR:
        return attr.as_tensor().numpy()
    return None


def static_shape(value: ir.Value) -> tuple[int, ...] | None:
    """The shape as ints when every dimension is known, else None."""
    shape = value.shape
    if shape is None or not shape.is_static():
        return None
    return tuple(int(d) for d in shape.dims)


def dtype_of(value: ir.Value) -> ir.DataType | None:
    return value.dtype


def opset_version(model_or_graph: ir.Model | ir.Graph, domain: str = "") -> int | None:
    """The opset the (main) graph imports for ``domain``; "ai.onnx" counts as ""."""
    imports = model_or_graph.opset_imports
    if domain in ("", "ai.onnx"):
        return imports.get("", imports.get("ai.onnx"))
    return imports.get(domain)


def unknown_ops(model: ir.Model) -> dict[str, int]:
    """``domain::op`` -> count for nodes whose op no ONNX schema nor model-local function
    defines; passes cannot reason about them and leave them as they are."""
    import onnx

    functions = set(model.functions)
    counts: dict[str, int] = {}
    for node in model.graph.all_nodes():
        if node.op_identifier() in functions:
            continue
        domain = "" if node.domain == "ai.onnx" else node.domain
        if not onnx.defs.has(node.op_type, domain):
            key = f"{node.domain}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def graph_protos(main: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``main`` and every subgraph nested in it, as protos (for edits below the IR: the
    writer's and loader's initializer rewrites)."""
    graphs = [main]
    for graph in graphs:  # grows while it is walked: breadth first
        graphs.extend(sub for node in graph.node for attribute in node.attribute
                      for sub in [*([attribute.g] if attribute.HasField("g") else []),
                                  *attribute.graphs])
    return graphs
