"""External data stays inside the model's folder: every tensor a model keeps in another
file (initializers and tensor attributes such as a Constant's value, in the main graph,
in every If/Loop/Scan body and in every model-local function) must name a regular file
inside the folder the model was loaded from, and reads it from there, not from the working
directory. A model file is untrusted input: a location like ``../../etc/passwd`` or an
absolute path would otherwise copy that file into the compiled output.

onnx_ir checks containment only for the tensors it is given a base directory for, and the
loader used to give it the main graph's alone (functions were never visited, and resolved
against the working directory); this walks everything and refuses before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import graph_protos


def confine(model: ir.Model, folder: Path | None, where: str) -> None:
    """Point every external tensor of ``model`` at ``folder`` (the loaded file's folder;
    None for a model given as bytes or a proto, which then may hold no external data), or
    refuse in one line naming the tensor and what is wrong with its location."""
    for tensor, owner in external_tensors(model):
        name = f"tensor {tensor.name!r} ({owner})"
        tensor.base_dir = str(checked(os.fspath(tensor.location), folder, where, name))


def read_attributes(model: ir.Model) -> None:
    """Read external attribute tensors (a Constant's value) into memory: onnx_ir writes an
    attribute back with the location it was loaded with, relative to the *input's* folder,
    so an output written anywhere else would not load (initializers are re-homed by the
    writer; attributes are small and few). After ``tensor_checks``: their sizes are known
    to fit their files."""
    for graph in _graphs(model):
        for node in graph.all_nodes():
            for attribute in list(node.attributes.values()):
                tensors = _tensors(attribute)
                if not any(isinstance(t, ir.ExternalTensor) for t in tensors):
                    continue
                read = [ir.Tensor(t.numpy(), dtype=t.dtype, name=t.name) for t in tensors]
                node.attributes[attribute.name] = (
                    ir.AttrTensor(attribute.name, read[0])
                    if attribute.type == ir.AttributeType.TENSOR
                    else ir.AttrTensors(attribute.name, read))


def _graphs(model: ir.Model) -> list[ir.Graph]:
    return [model.graph, *(function.graph for function in model.functions.values())]


def checked(location: str, folder: Path | None, where: str, name: str) -> Path:
    """The folder ``location`` (an external-data location of tensor ``name``) may be read
    from, resolved, after checking that it names a regular file inside ``folder``."""
    if folder is None:
        raise BadInputError(f"{where}: {name} keeps its data in the file {location!r}; "
                            "load the model from its path so that the file is found "
                            "beside it")
    base = folder.resolve()
    target = Path(os.path.normpath(base / location))
    if os.path.isabs(location) or not _within(target, base) or \
            not _within(target.resolve(), base):
        raise BadInputError(f"{where}: {name} points at {location!r}, outside the "
                            "model's folder; refused")
    if not target.is_file():
        raise BadInputError(f"{where}: {name} reads {location!r}, which is "
                            f"{'not a regular file' if target.exists() else 'missing'} "
                            "in the model's folder")
    return base


def external_tensors(model: ir.Model) -> Iterator[tuple[ir.ExternalTensor, str]]:
    """Every external tensor of ``model``, with where it sits (for messages)."""
    for tensor, owner in model_tensors(model):
        if isinstance(tensor, ir.ExternalTensor):
            yield tensor, owner


def model_tensors(model: ir.Model) -> Iterator[tuple[ir.TensorProtocol, str]]:
    """Every tensor ``model`` stores: initializers and tensor attributes (a Constant's
    value) of every graph, body and model-local function, with where it sits."""
    owners = ["main graph", *(f"function {f.name!r}" for f in model.functions.values())]
    for graph, owner in zip(_graphs(model), owners, strict=True):
        for body in [graph, *graph.subgraphs()]:
            for value in body.initializers.values():
                if value.const_value is not None:
                    yield value.const_value, f"initializer of the {owner}"
        for node in graph.all_nodes():
            for attribute in node.attributes.values():
                for tensor in _tensors(attribute):
                    yield tensor, f"attribute {attribute.name!r} of node {node.name!r} " \
                                  f"in the {owner}"


def _tensors(attribute: ir.Attr) -> list:
    if attribute.type == ir.AttributeType.TENSOR:
        return [attribute.value]
    if attribute.type == ir.AttributeType.TENSORS:
        return list(attribute.value)
    return []


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def model_files(path: Path) -> list[Path]:
    """The model file and the external-data files it names (resolved against its folder,
    unchecked: ``confine`` checks them when the model is loaded), for a job that must not
    write over what it reads; just the file when it does not parse."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model: loading it will say so, in one line
        return [path]
    graphs = graph_protos(proto.graph)
    nodes = [n for g in graphs for n in g.node] + [n for f in proto.functions for n in f.node]
    for node in list(nodes):  # subgraphs inside functions' nodes
        for attribute in node.attribute:
            for sub in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                nodes.extend(n for g in graph_protos(sub) for n in g.node)
    tensors = [t for g in graphs for t in g.initializer]
    tensors += [t for g in graphs for s in g.sparse_initializer for t in (s.values, s.indices)]
    tensors += [t for n in nodes for a in n.attribute
                for t in [*([a.t] if a.HasField("t") else []), *a.tensors]]
    found = dict.fromkeys([path])
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location")
            if location:
                found[path.parent / location] = None
    return list(found)
