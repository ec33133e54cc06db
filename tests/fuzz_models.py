"""Seeds and mutations for the fuzz test (tests/test_fuzz.py, issue 22): five small valid
models with a calibration file each, and the defects a model file, its external data, its
calibration archive and its folder can carry. A ``Case`` is plain data whose repr is the
Python that rebuilds it, so a failure prints its own reproduction:

    from fuzz_models import *          # with tests/ on sys.path
    job = write_job(Case(...), Path("/tmp/repro"))   # then run the printed command

Every mutation is deterministic given its parameters; indices wrap around (``% len``) so
that any drawn number names something that exists.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: hand-built models are written at IR 10 (tests/passes/pass_checks.py says why)
IR_VERSION = 10
OPSET = 17
SAMPLES = 8
#: what the files outside the job folder hold, repeated: a hostile external-data location
#: would copy it into an output
SECRET = b"root:x:0:0:fuzz-secret-line\n"
#: locations inside the job folder that name a regular file there (w.bin: the external
#: seed's); every other location in HOSTILE_LOCATIONS must be refused
CONFINED_LOCATIONS = {"sub/inner.bin", "sub/../w.bin", "w.bin"}

__all__ = ["Case", "Job", "SEEDS", "DTYPES", "OPS", "MODEL_MUTATIONS", "CALIBRATION_MUTATIONS",
           "HOSTILE_LOCATIONS", "CONFINED_LOCATIONS", "seed", "write_job", "graphs_of", "SECRET"]


# -- seeds --------------------------------------------------------------------------------

def _init(name: str, shape: tuple[int, ...], seed: int, dtype=np.float32) -> TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", OPSET)])


def _mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]),
             helper.make_node("Add", ["h1", "b1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]),
             helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
             helper.make_node("Add", ["h4", "b2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [_init("w1", (8, 16), 1), _init("b1", (16,), 2), _init("w2", (16, 4), 3),
         _init("b2", (4,), 4)])
    return _model(graph)


def _conv() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "bs", "bb", "bm", "bv"], ["c2"]),
             helper.make_node("Relu", ["c2"], ["c3"]),
             helper.make_node("GlobalAveragePool", ["c3"], ["c4"]),
             helper.make_node("Flatten", ["c4"], ["c5"]),
             helper.make_node("Gemm", ["c5", "gw", "gb"], ["y"], transB=1)]
    var = numpy_helper.from_array(np.abs(np.random.default_rng(9).standard_normal(4))
                                  .astype(np.float32) + 0.5, "bv")
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [_init("cw", (4, 3, 3, 3), 5), _init("cb", (4,), 6), _init("bs", (4,), 7),
         _init("bb", (4,), 8), _init("bm", (4,), 10), var, _init("gw", (3, 4), 11),
         _init("gb", (3,), 12)])
    return _model(graph)


def _if() -> onnx.ModelProto:
    """y = Relu(If(cond, x + a, x * b)); each branch keeps its constant as its own
    initializer and reads x from the outer scope."""
    then = helper.make_graph([helper.make_node("Add", ["x", "a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 4])],
                             [_init("a", (4,), 13)])
    other = helper.make_graph([helper.make_node("Mul", ["x", "b"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT,
                                                             ["N", 4])],
                              [_init("b", (4,), 14)])
    nodes = [helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=other),
             helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return _model(graph)


def _gather() -> onnx.ModelProto:
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["g"]),
             helper.make_node("ReduceMean", ["g"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "proj"], ["y"])]
    graph = helper.make_graph(
        nodes, "gather", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [_init("emb", (10, 4), 15), _init("proj", (4, 2), 16)])
    return _model(graph)


def _calibration(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100)
    if name == "conv":
        return {"x": rng.standard_normal((SAMPLES, 3, 8, 8)).astype(np.float32)}
    if name == "if":  # cond: a scalar, the same in every batch
        return {"x": rng.standard_normal((SAMPLES, 4)).astype(np.float32),
                "cond": np.array(True)}
    if name == "gather":
        return {"ids": rng.integers(0, 10, (SAMPLES, 3)).astype(np.int64)}
    return {"x": rng.standard_normal((SAMPLES, 8)).astype(np.float32)}


#: name -> (builder, weights in ``w.bin`` beside the model)
SEEDS = {"mlp": (_mlp, False), "conv": (_conv, False), "if": (_if, False),
         "external": (_mlp, True), "gather": (_gather, False)}


@functools.lru_cache(maxsize=None)
def _seed_bytes(name: str) -> bytes:
    model = SEEDS[name][0]()
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def seed(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A fresh copy of seed ``name`` (weights inline) and its calibration arrays."""
    return onnx.load_from_string(_seed_bytes(name)), _calibration(name)


def graphs_of(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every If/Loop/Scan body below it, breadth first."""
    graphs = [model.graph]
    for graph in graphs:
        graphs.extend(sub for node in graph.node for attr in node.attribute
                      for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs])
    return graphs


# -- model mutations (on the proto) -------------------------------------------------------

#: element types an input or initializer may be switched to (0 UNDEFINED, 99 no such type)
DTYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
          TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64,
          TensorProto.UINT64, TensorProto.BOOL, TensorProto.STRING, TensorProto.COMPLEX64,
          TensorProto.FLOAT8E4M3FN, TensorProto.INT4, 0, 99]
OPS = ["Relu", "Add", "MatMul", "Conv", "Gather", "If", "Softmax", "Identity", "Reshape",
       "Transpose", "Sigmoid", "QuantizeLinear", "Loop", "Concat", "Cast", "NoSuchOp"]
#: where a tensor's external data may be said to live; "{outside}" is the absolute path of
#: the outside folder, "link.bin" a symlink beside the model into it, "pipe.bin" a FIFO
HOSTILE_LOCATIONS = ["../outside.bin", "../outside/secret.bin", "{outside}/secret.bin",
                     "/etc/passwd", "link.bin", "linkdir/secret.bin", "pipe.bin",
                     "missing.bin", ".", "sub", "sub/../w.bin", "sub/inner.bin", ""]


def _pick(items, index: int):
    return items[index % len(items)]


def _input_dtype(model, index: int, dtype: int) -> None:
    _pick(model.graph.input, index).type.tensor_type.elem_type = dtype


def _output_dtype(model, index: int, dtype: int) -> None:
    _pick(model.graph.output, index).type.tensor_type.elem_type = dtype


def _input_rank(model, index: int, how: str) -> None:
    tensor_type = _pick(model.graph.input, index).type.tensor_type
    dims = tensor_type.shape.dim
    if how == "add":
        dims.add().dim_value = 3
    elif how == "drop" and len(dims):
        del dims[len(dims) - 1]
    elif how == "scalar":
        del dims[:]
        tensor_type.shape.SetInParent()
    elif how == "unknown":
        tensor_type.ClearField("shape")
    elif how in ("zero", "negative") and len(dims):
        dims[len(dims) - 1].dim_value = 0 if how == "zero" else -5
    elif how == "pin" and len(dims):  # the batch dim fixed to a length the data lacks
        dims[0].dim_value = 5


def _initializers(model) -> list[TensorProto]:
    return [t for g in graphs_of(model) for t in g.initializer]


def _init_dims(model, index: int, how: str) -> None:
    tensor = _pick(_initializers(model), index)
    dims = list(tensor.dims)
    new = {"grow": [dims[0] + 1, *dims[1:]] if dims else [2],
           "shrink": [max(dims[0] - 1, 0), *dims[1:]] if dims else [0],
           "add": [*dims, 1], "drop": dims[:-1], "zero": [0, *dims[1:]],
           "negative": [-1, *dims[1:]], "swap": dims[::-1] + [2]}[how]
    del tensor.dims[:]
    tensor.dims.extend(new)


def _init_dtype(model, index: int, dtype: int) -> None:
    _pick(_initializers(model), index).data_type = dtype


def _nodes(model) -> list[onnx.NodeProto]:
    return [n for g in graphs_of(model) for n in g.node]


def _op_type(model, index: int, op: str) -> None:
    _pick(_nodes(model), index).op_type = op


def _domain(model, index: int, domain: str) -> None:
    _pick(_nodes(model), index).domain = domain


def _dangling_input(model, index: int) -> None:
    node = _pick(_nodes(model), index)
    if node.input:
        node.input[0] = "nowhere"


def _drop_input(model, index: int) -> None:
    node = _pick(_nodes(model), index)
    if node.input:
        del node.input[len(node.input) - 1]


def _duplicate_output(model, index: int) -> None:
    """A node's output renamed to another node's (two producers of one value)."""
    nodes = model.graph.node
    first, second = _pick(nodes, index), _pick(nodes, index + 1)
    if first is not second:
        second.output[0] = first.output[0]


def _reorder(model, index: int) -> None:
    """The first node moved to the end: a graph out of topological order."""
    nodes = list(model.graph.node)
    if len(nodes) > 1:
        del model.graph.node[:]
        model.graph.node.extend(nodes[1:] + nodes[:1])


def _opset(model, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if version < 0:
                model.opset_import.remove(opset)
            else:
                opset.version = version
            return


def _ir_version(model, version: int) -> None:
    model.ir_version = version


def _external(model, index: int, location: str, offset: str, length: str) -> None:
    """An initializer's data moved to ``location`` (write_job puts the bytes there when
    the location can hold them); ``offset``/``length`` "" keep the true values."""
    tensor = _pick(_initializers(model), index)
    entries = {e.key: e.value for e in tensor.external_data}
    if tensor.data_location != TensorProto.EXTERNAL:
        size = len(tensor.raw_data) if tensor.HasField("raw_data") else 0
        entries = {"offset": "0", "length": str(size)}
        tensor.ClearField("raw_data")
        for field in ("float_data", "int64_data", "int32_data", "double_data"):
            tensor.ClearField(field)
        tensor.data_location = TensorProto.EXTERNAL
    entries["location"] = location
    entries.update({k: v for k, v in (("offset", offset), ("length", length)) if v})
    del tensor.external_data[:]
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


MODEL_MUTATIONS = {
    "input_dtype": _input_dtype, "output_dtype": _output_dtype, "input_rank": _input_rank,
    "init_dims": _init_dims, "init_dtype": _init_dtype, "op_type": _op_type,
    "domain": _domain, "dangling_input": _dangling_input, "drop_input": _drop_input,
    "duplicate_output": _duplicate_output, "reorder": _reorder, "opset": _opset,
    "ir_version": _ir_version, "external": _external,
}


# -- calibration mutations (on the arrays or the archive's bytes) -------------------------

def _mutate_arrays(arrays: dict[str, np.ndarray], kind: str, index: int,
                   arg: str) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    name = _pick(sorted(arrays), index)
    if kind == "dtype":
        arrays[name] = arrays[name].astype(arg)
    elif kind == "rank":
        a = arrays[name]
        arrays[name] = {"add": a[..., None], "drop": a.reshape(a.shape[:-1] + (-1,))[..., 0]
                        if a.ndim else a, "scalar": a.reshape(-1)[0],
                        "flat": a.reshape(-1),
                        # a stack of single-sample feeds, which the format allows
                        "stack": np.stack([a] * SAMPLES)}[arg]
    elif kind == "missing":
        del arrays[name]
    elif kind == "extra":
        arrays[arg] = np.zeros((SAMPLES, 2), np.float32)
    elif kind == "zero_samples":
        arrays = {k: v[:0] if v.ndim else v for k, v in arrays.items()}
    elif kind == "fewer_samples":  # inputs disagree on the number of samples
        arrays[name] = arrays[name][:3] if arrays[name].ndim else arrays[name]
    elif kind == "value":
        a = arrays[name]
        fill = {"nan": np.nan, "inf": np.inf, "big": 1e30, "negative": -7, "huge": 10**9}[arg]
        if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
            a = a.copy()
            a.reshape(-1)[:: max(a.size // 3, 1)] = fill if np.issubdtype(
                a.dtype, np.floating) or arg in ("negative", "huge") else 0
            arrays[name] = a
    return arrays


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


CALIBRATION_MUTATIONS = ["dtype", "rank", "missing", "extra", "zero_samples",
                         "fewer_samples", "value", "truncate", "flip", "not_npz", "folder"]


# -- a case and its job folder ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One fuzz case: a seed, what is done to its files, and what the CLI is asked."""

    seed: str
    #: (name in MODEL_MUTATIONS, *args), applied in order to the proto
    model: tuple[tuple, ...] = ()
    #: ("truncate", fraction) or ("flip", ((offset_fraction, xor_byte), ...)) on the bytes
    model_bytes: tuple | None = None
    #: the same on w.bin (the "external" seed only)
    sidecar_bytes: tuple | None = None
    #: (kind in CALIBRATION_MUTATIONS, index, arg)
    calibration: tuple | None = None
    #: a symlink planted at an output path: "out.onnx", "out.onnx.data" or None
    planted: str | None = None
    passes: str | None = "cleanup"
    check: bool = False
    use_calibration: bool = True
    report: bool = False
    #: compare's operands: "ref,model" or "model,ref"
    compare: str = "ref,model"

    @property
    def must_refuse(self) -> bool:
        """A tensor's data said to live outside the folder, in a link, FIFO or folder, or
        in a file that is not there: no command may succeed."""
        sidecar = SEEDS[self.seed][1]
        return any(name == "external" and not (
            args[1] == "sub/inner.bin" or (args[1] in CONFINED_LOCATIONS and sidecar))
            for name, *args in self.model)

    @property
    def mutated(self) -> bool:
        """Whether anything was done that may leave the job unusable; the inputs stay
        usable with a weight moved, at its offset, into a regular file inside the folder,
        with calibration arrays given as stacks of single-sample feeds and with a folder
        of .npz files as calibration data (the formats allow all three), so every command
        must accept them."""
        sidecar = SEEDS[self.seed][1]
        model = [m for m in self.model if not (
            m[0] == "external" and m[3] in ("", "0") and m[4] == ""
            and (m[2] == "sub/inner.bin" or (m[2] in CONFINED_LOCATIONS and sidecar)))]
        usable = self.calibration is None or self.calibration[0] == "folder" \
            or self.calibration[::2] == ("rank", "stack")
        return bool(model or self.model_bytes or self.sidecar_bytes or self.planted
                    or not usable)


def _bytes_mutation(data: bytes, mutation: tuple | None) -> bytes:
    if mutation is None or not data:
        return data
    if mutation[0] == "truncate":
        return data[:int(len(data) * mutation[1])]
    flipped = bytearray(data)
    for where, xor in mutation[1]:
        flipped[min(int(len(data) * where), len(data) - 1)] ^= xor
    return bytes(flipped)


@dataclasses.dataclass(frozen=True)
class Job:
    root: Path       # holds job/, outside/, outside.bin and cwd/
    folder: Path     # the job folder: model.onnx, w.bin, calib.npz, ref.onnx
    model: Path
    ref: Path
    calibration: Path
    out: Path
    report: Path
    cwd: Path        # the working directory the CLI runs in (a decoy w.bin inside)


def write_job(case: Case, root: Path) -> Job:
    """The files of ``case`` under ``root`` (which must exist and be empty)."""
    folder, outside, cwd = root / "job", root / "outside", root / "cwd"
    for path in (folder, outside, cwd, folder / "sub", folder / "linkdir"):
        path.mkdir()
    model, arrays = seed(case.seed)
    onnx.save(model, folder / "ref.onnx")
    # the files hostile locations name: the secret, repeated past the largest weight's
    # length, so that a tensor read from one would load and carry it into an output
    largest = max(len(numpy_helper.to_array(t).tobytes()) for t in _initializers(model))
    payload = SECRET * (largest // len(SECRET) + 2)
    for path in (root / "outside.bin", outside / "secret.bin", cwd / "w.bin"):
        path.write_bytes(payload)
    (folder / "sub" / "inner.bin").write_bytes(np.ones(len(payload) // 4, np.float32).tobytes())
    (folder / "link.bin").symlink_to(outside / "secret.bin")
    (folder / "linkdir" / "secret.bin").symlink_to(outside / "secret.bin")
    os.mkfifo(folder / "pipe.bin")
    if SEEDS[case.seed][1]:
        onnx.save(model, folder / "model.onnx", save_as_external_data=True,
                  all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
        model = onnx.load(folder / "model.onnx", load_external_data=False)
    for name, *args in case.model:
        if name == "external" and "{outside}" in args[1]:
            args[1] = args[1].format(outside=outside)
        MODEL_MUTATIONS[name](model, *args)
    (folder / "model.onnx").write_bytes(
        _bytes_mutation(model.SerializeToString(), case.model_bytes))
    if (folder / "w.bin").exists():
        (folder / "w.bin").write_bytes(
            _bytes_mutation((folder / "w.bin").read_bytes(), case.sidecar_bytes))
    _write_calibration(folder / "calib.npz", arrays, case.calibration)
    out = folder / "out.onnx"
    if case.planted:
        (folder / case.planted).symlink_to(outside / "secret.bin")
    return Job(root, folder, folder / "model.onnx", folder / "ref.onnx",
               folder / "calib.npz", out, folder / "report.json", cwd)


def _write_calibration(path: Path, arrays: dict[str, np.ndarray],
                       mutation: tuple | None) -> None:
    kind, index, arg = mutation if mutation else (None, 0, None)
    if kind == "folder":  # a folder named calib.npz holding one good archive
        path.mkdir()
        (path / "part.npz").write_bytes(_npz_bytes(arrays))
        return
    if kind not in (None, "truncate", "flip", "not_npz"):
        arrays = _mutate_arrays(arrays, kind, index, arg)
    data = _npz_bytes(arrays)
    if kind == "truncate":
        data = _bytes_mutation(data, ("truncate", arg))
    elif kind == "flip":
        data = _bytes_mutation(data, ("flip", arg))
    elif kind == "not_npz":
        data = arg.encode()
    path.write_bytes(data)
