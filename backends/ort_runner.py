"""The one runner interface passes and tools use to execute a model (ONNX Runtime here).

Passes that need to run a model (calibration, numeric checks) call ``Runner``; nothing else
in the passes imports onnxruntime, so the runtime can be swapped.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.backends.files import scratch
from onnxpress.backends.onnx_writer import PROTOBUF_LIMIT, save, to_proto
from onnxpress.errors import BadInputError, RuntimeRefusedError
from onnxpress.ir.analysis import parameter_bytes

#: ONNX Runtime's u8s8 integer kernels on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
#: add pairs of products in 16 bits and saturate on full-range int8 weights: on such a CPU the
#: lowered digits ViT lost 9 points of top-1. This option has ORT turn those weights into
#: uint8 when the session starts, so that results do not depend on the CPU (and VNNI CPUs,
#: where the kernels are exact, are left as they are).
PRECISE_INT8 = ("session.x64quantprecision", "1")

#: an IR model with more weight bytes than this reaches ONNX Runtime through a temporary
#: file with external data, not serialized bytes: in memory, the proto and its bytes are two
#: more copies of the weights beside the IR's and the session's (SmolLM2-135M's 550 MB:
#: Wanda's calibration run and save peaked at 4.2 GB in memory, 1.9 GB through a file)
IN_MEMORY_BYTES = 256 << 20


def session_options(*, precise: bool = True) -> Any:
    """ORT session options every onnxpress session starts from: quiet, and exact int8."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # fatal only: a failing run also raises, and its error-level log lines would break the
    # CLI's one line on stderr
    options.log_severity_level = 4
    if precise:
        options.add_session_config_entry(*PRECISE_INT8)
    return options


def inference_session(source: Any, configure: Callable[[Any], None] = lambda _: None,
                      providers: list[str] | None = None, *, precise: bool = True) -> Any:
    """An ORT session with exact int8 (``PRECISE_INT8``), ``configure`` applied to its
    options. ORT's weight conversion fails on some models (int8-activation QOperator ops left
    without a kernel; a weight shared by two nodes converted twice): those start without
    it, and a model that does not load either way raises that second error. (It can also
    break a model at run time, e.g. a per-channel int8 DequantizeLinear: ``Runner`` then
    starts again with ``precise=False``.)"""
    import onnxruntime as ort

    chosen = providers or ["CPUExecutionProvider"]
    if precise:
        options = session_options()
        configure(options)
        try:
            return ort.InferenceSession(source, options, providers=chosen)
        except Exception:  # ORT raises its own classes for every load failure
            pass
    options = session_options(precise=False)
    configure(options)
    return ort.InferenceSession(source, options, providers=chosen)


def give_back_memory() -> None:
    """Hand freed arrays and closed ONNX Runtime sessions back to the system: glibc keeps
    freed heap for reuse, and after an LLM's calibration run or pass that is a model's worth
    (SmolLM2-135M's Wanda: its stream's session left 1 GB, so the pass peaked at 2.1 GB
    instead of 1.7), which the next allocation or session would add to."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


@contextlib.contextmanager
def materialized(model: ir.Model | str | os.PathLike | bytes) -> Iterator[str | bytes]:
    """``model`` as ONNX Runtime and onnx.checker take it: serialized bytes (external weights
    read in), or above ``IN_MEMORY_BYTES`` of weights a temporary file with external data,
    removed on exit (a path or bytes pass through)."""
    if isinstance(model, (bytes, str)):
        yield model
    elif isinstance(model, os.PathLike):
        yield os.fspath(model)
    elif parameter_bytes(model) < min(IN_MEMORY_BYTES, PROTOBUF_LIMIT // 2):
        yield to_proto(model).SerializeToString()
    else:
        with scratch("run") as folder:
            yield os.fspath(save(model, Path(folder) / "model.onnx", external_data=True))


class Runner:
    """An ONNX Runtime CPU session over an IR model, a path or serialized bytes."""

    def __init__(
        self,
        model: ir.Model | str | os.PathLike | bytes,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        optimize: bool = True,
        spinning: bool = True,
        precise: bool = True,
    ) -> None:
        """``spinning=False``: idle intra-op threads sleep at once instead of spinning, which
        interleaved benchmarks need (a finished session's spinning threads would steal the
        two cores from the next model's run). ``precise=False``: the session a deployment
        opens, without ``PRECISE_INT8``, which timing needs: that conversion sends ORT's
        integer MatMuls to its slow u8u8 kernels (MatMulIntegerToFloat 128x384x1536 on a
        Xeon with AMX: 0.19 ms without it, 1.08 ms with it, fp32 0.96 ms)."""
        import onnxruntime as ort

        def configure(options: ort.SessionOptions) -> None:
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if not optimize:
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

        self._open = lambda precise: self._session(model, configure, providers, precise)
        self.session, self._precise = self._open(precise), precise

    def _session(self, model: ir.Model | str | os.PathLike | bytes,
                 configure: Callable[[Any], None], providers: list[str] | None,
                 precise: bool) -> Any:
        with materialized(model) as source:
            try:
                return inference_session(source, configure, providers, precise=precise)
            except Exception as error:  # ORT raises its own classes for every load failure
                reason = first_line(error)
                raise RuntimeRefusedError(f"ONNX Runtime cannot load the model: {reason}",
                                          loading=True, reason=reason) from None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise BadInputError(f"no data for model input {missing[0]!r}; add it to the data")
        wanted = {name: feeds[name] for name in self.input_names}
        try:
            outputs = self._run(wanted)
        except Exception as error:  # ORT raises its own classes; numpy's for bad feeds
            reason = first_line(error)
            raise RuntimeRefusedError(f"ONNX Runtime cannot run the model on "
                                      f"{_described(wanted)}: {reason}", loading=False,
                                      reason=reason) from None
        return dict(zip(self.output_names, outputs))

    def _run(self, wanted: dict[str, np.ndarray]) -> list:
        try:
            return self.session.run(None, wanted)
        except Exception:  # ORT's int8 weight conversion broke the model (inference_session)
            if not self._precise:
                raise
            self.session, self._precise = self._open(False), False
            return self.session.run(None, wanted)


def _described(feeds: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {np.asarray(a).dtype}{list(np.shape(a))}"
                     for name, a in feeds.items()) or "no inputs"


def first_line(error: BaseException) -> str:
    """An exception's first line, for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
