"""ONNX Runtime's own graph tools, behind one interface: the transformer fusions of
``onnxruntime.transformers.optimizer`` (the maintained successor of onnxruntime-tools), the
model ORT saves after its session-time optimisation, and the execution providers."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import onnx_ir as ir

from onnxpress.backends.files import replace_atomically, writable
from onnxpress.backends.onnx_writer import save
from onnxpress.backends.ort_runner import inference_session
from onnxpress.errors import BadInputError

#: short names -> ONNX Runtime's provider names
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider",
             "dnnl": "DnnlExecutionProvider", "coreml": "CoreMLExecutionProvider"}
LEVELS = ("basic", "extended", "all")


def providers(names: str | list[str] | None) -> list[str]:
    """ORT provider names for ``names`` (``"cuda,cpu"``, short or full names), checked
    against the installed onnxruntime; CPU always comes last as the fallback."""
    import onnxruntime as ort

    if names is None:
        return ["CPUExecutionProvider"]
    wanted = names.split(",") if isinstance(names, str) else list(names)
    chosen = [PROVIDERS.get(n.strip().lower(), n.strip()) for n in wanted if n.strip()]
    available = ort.get_available_providers()
    for name in chosen:
        if name not in available:
            raise BadInputError(f"execution provider {name!r} is not in this onnxruntime "
                                f"(available: {', '.join(available)}); install the build "
                                "that has it, e.g. onnxruntime-gpu for CUDA")
    return [p for p in chosen if p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


def save_optimized(model: ir.Model | str | os.PathLike, out: str | os.PathLike, *,
                   level: str = "extended", provider: str | list[str] | None = None,
                   reading: Iterable[str | os.PathLike] = ()) -> Path:
    """Write the model ONNX Runtime runs after its graph optimisation at ``level``, so a
    deployment can load it with optimisation off and start faster. ``all`` adds layout
    changes (NCHWc) that only the machine and provider that wrote them can run."""
    import onnxruntime as ort

    if level not in LEVELS:
        raise BadInputError(f"ORT optimisation level {level!r}; choose one of {', '.join(LEVELS)}")
    out = writable(out, reading=reading, what="optimised model")
    # a hidden folder beside the output, not the system's: the job writes only there
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp",
                                     dir=out.parent) as folder:
        source = model if not isinstance(model, ir.Model) else save(model, Path(folder) / "in.onnx")
        written = Path(folder) / "optimized.onnx"

        def configure(options: ort.SessionOptions) -> None:
            options.graph_optimization_level = {
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
            options.optimized_model_filepath = os.fspath(written)

        try:
            inference_session(os.fspath(source), configure, providers(provider))
        except Exception as error:  # ORT raises its own classes for every load failure
            raise BadInputError(f"ONNX Runtime cannot load the model: "
                                f"{str(error).strip().splitlines()[0]}") from None
        _copy(written, out, [*reading, *([model] if not isinstance(model, ir.Model) else [])])
    return out


def _copy(source: Path, out: Path, reading: Iterable[str | os.PathLike] = ()) -> None:
    """Atomic write across folders (``backends.files``)."""
    replace_atomically(out, lambda tmp: shutil.copyfile(source, tmp), reading=reading,
                       what="optimised model")


def transformer_fusions(model: ir.Model, *, model_type: str, num_heads: int = 0,
                        hidden_size: int = 0) -> tuple[ir.Model, dict[str, int]]:
    """``onnxruntime.transformers.optimizer.optimize_model`` on ``model`` (its Python
    fusions only, ``opt_level=0``: no ORT session rewrites the result); returns the fused
    model and the fused-op counts it reports."""
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory(prefix="onnxpress-ortx-") as folder:
        path = save(model, Path(folder) / "in.onnx")
        try:
            with _quiet():
                fused = optimize_model(os.fspath(path), model_type=model_type,
                                       num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        except Exception as error:  # its fusions raise plain exceptions on odd graphs
            raise BadInputError(f"onnxruntime.transformers could not fuse this model "
                                f"({type(error).__name__}: {error}); leave ort-transformers out"
                                ) from None
        counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        return ir.serde.deserialize_model(fused.model), counts


@contextlib.contextmanager
def _quiet():
    """ORT's optimizer prints its shape-inference failures and logs warnings (no num_heads
    given, which it then detects itself); the pass's report says what it fused."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
