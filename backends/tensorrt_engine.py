"""Build a TensorRT engine from an ONNX file, run it, and compare it with ONNX Runtime.

This is the check behind ``--target tensorrt``: the ONNX we emit must not only be
"TensorRT-compatible" in name, TensorRT must parse and build it and agree with ORT on it.

Device buffers are torch CUDA tensors rather than pycuda / cuda-python allocations: torch is
already a dependency (frontends), and it gives us allocation, host copies, streams and event
timing in one package. ``tensorrt`` and torch are imported inside functions so that this
module imports on machines without either; ``unavailable()`` says why nothing can run here.
The code is exercised only where the GPU tests run (CI has no GPU and no tensorrt).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.ir.agreement import cosine

PRECISIONS = ("int8", "fp16", "fp32")
_WARMUPS = 5

# trt.DataType names -> torch dtype names; keyed by name so torch/tensorrt stay lazy, and
# covering BF16, which trt.nptype cannot map to numpy.
_TORCH_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def unavailable() -> str | None:
    """Why an engine cannot be built here (one line, saying what to install or that no CUDA
    GPU is visible), or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt)"
    except Exception as error:  # a wheel whose CUDA libraries fail to load raises OSError etc.
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return f"the tensorrt Python package cannot be loaded: {first}"
    try:
        import torch
    except ImportError:
        # Without torch we cannot ask CUDA directly; nvidia-smi tells the two reasons apart.
        if shutil.which("nvidia-smi") is None:
            return "no CUDA GPU is visible"
        return "torch with CUDA is needed to run the engine"
    if torch.version.cuda is None:  # a CPU-only torch build can never hold device buffers
        return "torch with CUDA is needed to run the engine"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def _require() -> None:
    reason = unavailable()
    if reason is not None:
        raise BadInputError(f"TensorRT engine build skipped: {reason}")


@dataclasses.dataclass
class EngineReport:
    engine_path: str
    precision: str  # "int8" | "fp16" | "fp32"
    build_s: float  # 0.0 when an up-to-date engine was reused
    latency_ms: float  # median of the timed executions at the feeds' shapes
    agreement: list[dict]  # per output: {"output", "max_abs", "cosine"} against ORT CPU


def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0] if text else "no message"


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    precision: str = "int8",
    feeds: Mapping[str, np.ndarray] | None = None,
    workspace_gb: float = 4.0,
) -> str:
    """Parse ``onnx_path`` with TensorRT's ONNX parser, build, and write the serialized engine
    atomically to ``engine_path``; return that path. Dynamic inputs get a single-shape
    optimization profile taken from ``feeds``."""
    _require()
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise BadInputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        detail = parser.get_error(0).desc() if parser.num_errors else "no parser message"
        raise BadInputError(f"TensorRT cannot parse {os.fspath(onnx_path)}: {_first_line(detail)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("int8", "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # Our quantized models carry explicit Q/DQ: scales come from the graph, so INT8 is
        # enabled without a calibrator; FP16 lets the unquantized layers run in half too.
        config.set_flag(trt.BuilderFlag.INT8)

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if all(d >= 0 for d in tensor.shape):
            continue
        if feeds is None or tensor.name not in feeds:
            raise BadInputError(
                f"input {tensor.name!r} has a dynamic shape {tuple(tensor.shape)}; give feeds "
                "for it or make the shapes static first (the static-shapes pass)"
            )
        shape = tuple(int(d) for d in np.shape(feeds[tensor.name]))
        if profile is None:
            profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, shape, shape, shape)
    if profile is not None:
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BadInputError(
            f"TensorRT could not build an engine from {os.fspath(onnx_path)} at {precision} "
            "(see the TensorRT log above)"
        )
    return _write_atomic(Path(engine_path), memoryview(serialized))


def _write_atomic(path: Path, data: memoryview) -> str:
    # Same-folder temp file so os.replace is a rename, never a half-written engine.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return os.fspath(path)


def run_engine(
    engine_path: str | os.PathLike,
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int = 0,
) -> tuple[dict[str, np.ndarray], float | None]:
    """Run the engine once on ``feeds`` and return its outputs; with ``runs > 0`` also the
    median latency in ms of ``runs`` timed executions after warm-ups (else None)."""
    _require()
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:  # built by another TensorRT version or for another GPU
        raise BadInputError(f"TensorRT cannot load the engine {os.fspath(engine_path)}; rebuild it")
    context = engine.create_execution_context()

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    # Kept alive until the last execution: TensorRT holds only raw device pointers.
    buffers: dict[str, Any] = {}
    for name in inputs:
        if name not in feeds:
            raise BadInputError(f"no data for engine input {name!r}; add it to the feeds")
        dtype = _torch_dtype(torch, engine.get_tensor_dtype(name))
        array = np.ascontiguousarray(feeds[name])
        buffers[name] = torch.from_numpy(array).to(device="cuda", dtype=dtype).contiguous()
        context.set_input_shape(name, tuple(buffers[name].shape))
    for name in outputs:
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BadInputError(
                f"engine output {name!r} has a data-dependent shape {shape}; not supported here"
            )
        dtype = _torch_dtype(torch, engine.get_tensor_dtype(name))
        buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
    for name in names:
        context.set_tensor_address(name, buffers[name].data_ptr())

    stream = torch.cuda.current_stream()

    def execute() -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise BadInputError(f"TensorRT failed to run the engine {os.fspath(engine_path)}")

    execute()
    stream.synchronize()
    results = {name: _to_numpy(buffers[name]) for name in outputs}

    latency = None
    if runs > 0:
        for _ in range(_WARMUPS):
            execute()
        times = []
        for _ in range(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            execute()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
        latency = float(statistics.median(times))
    return results, latency


def _torch_dtype(torch: Any, trt_dtype: Any) -> Any:
    name = _TORCH_DTYPES.get(trt_dtype.name)
    if name is None:  # FP8 / INT4 / FP4 I/O tensors: no host dtype to fill or read them
        raise BadInputError(f"engine I/O tensor type {trt_dtype.name} is not supported here")
    return getattr(torch, name)


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.cpu().numpy()


def engine_report(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    feeds: Mapping[str, np.ndarray],
    *,
    precision: str = "int8",
    runs: int = 50,
) -> EngineReport:
    """Build the engine unless an engine newer than the ONNX file exists (which is reused
    whatever precision it was built at), time it, and compare its outputs with ORT CPU."""
    _require()
    import time

    onnx_file, engine_file = Path(onnx_path), Path(engine_path)
    build_s = 0.0
    if not engine_file.exists() or engine_file.stat().st_mtime < onnx_file.stat().st_mtime:
        began = time.perf_counter()
        build_engine(onnx_file, engine_file, precision=precision, feeds=feeds)
        build_s = time.perf_counter() - began
    got, latency = run_engine(engine_file, feeds, runs=max(runs, 1))
    expected = Runner(onnx_file).run(feeds)
    agreement = []
    for name, want in expected.items():
        if name not in got:
            raise BadInputError(f"the engine lacks output {name!r}; TensorRT dropped or renamed it")
        agreement.append({"output": name, **_agreement(want, got[name])})
    return EngineReport(
        engine_path=os.fspath(engine_file),
        precision=precision,
        build_s=build_s,
        latency_ms=float(latency or 0.0),
        agreement=agreement,
    )


def _agreement(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    a = np.asarray(want, dtype=np.float64).ravel()
    b = np.asarray(got, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise BadInputError(f"engine output has {b.size} values, ONNX Runtime's {a.size}")
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return {"max_abs": max_abs, "cosine": cosine(a, b)}
