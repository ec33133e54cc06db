"""Peer int8 quantizers, each on the fp32 file with the same calibration batches as ONNX
Runtime's (``VARIANTS`` adds them to :data:`.variants.BUILT_IN`).

- ``modelopt-int8``: NVIDIA ModelOpt, ``modelopt.onnx.quantization.quantize(quantize_mode=
  "int8")`` with its default calibration (entropy) on ONNX Runtime's CPU provider,
  ``high_precision_dtype="fp32"`` (its default, fp16, targets TensorRT, not a CPU),
  ``dq_only=True`` (int8 weights behind a DequantizeLinear only, not fp32 weights behind a
  Q/DQ pair) and ``simplify=True`` (without its onnxslim pass the exports' ``Shape(weight)``
  nodes keep every fp32 weight alive). Its QDQ placement is made for TensorRT;
- ``inc-int8``: Intel's onnx-neural-compressor, ``quantize`` with a default
  ``StaticQuantConfig`` (QOperator, U8S8, per-tensor weights, MinMax). It writes weights to
  a side file; the variant saves them inline.

Both run in a child process (ModelOpt imports torch, which must stay out of the timing
process; a peer's crash or logging set-up stays there) and retry on the export after
``cleanup`` when they fail on it. A peer that is not installed is ``unavailable`` with the
command that installs it (see pyproject's ``[peers]`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .child import run_child
from .subjects import Batch, Subject, batched
from .suite import Context, Unavailable
from .variants import BUILT_IN, Builder, Variant, on_cleaned_if_failing

#: variant -> (top-level package: finding a submodule would import it, and modelopt's imports
#: torch; distribution; how to install it)
PEERS = {
    "modelopt-int8": ("modelopt", "nvidia-modelopt", "pip install -e .[peers]"),
    "inc-int8": ("onnx_neural_compressor", "onnx-neural-compressor",
                 "pip install --no-deps onnx-neural-compressor && pip install prettytable"),
}
TIMEOUT_S = 1800


def _peer(variant: str) -> Builder:
    def build(subject: Subject, path: Path, ctx: Context) -> None:
        package, distribution, install = PEERS[variant]
        if importlib.util.find_spec(package) is None:
            raise Unavailable(f"{distribution} is not installed ({install})")
        with tempfile.TemporaryDirectory(prefix="quant-peer-") as tmp:
            data = Path(tmp) / "calibration.npz"
            np.savez(data, **{k: np.concatenate([b[k] for b in subject.calibration])
                              for k in subject.calibration[0]})
            run_child(quantize_with_peer, timeout=TIMEOUT_S, variant=variant,
                      fp32=str(subject.fp32), out=str(path), data=str(data))

    return build


def _variant(name: str, what: str) -> Variant:
    _, distribution, install = PEERS[name]
    return Variant(on_cleaned_if_failing(_peer(name), what), producer=distribution,
                   install=install)


VARIANTS: dict[str, Variant] = {**BUILT_IN,
                                "modelopt-int8": _variant("modelopt-int8", "ModelOpt"),
                                "inc-int8": _variant("inc-int8", "onnx-neural-compressor")}


# --- the child process: one peer, one model ---------------------------------------------

def quantize_with_peer(variant: str, fp32: str, out: str, data: str) -> None:
    import logging

    logging.disable(logging.WARNING)  # the peers' per-tensor chatter
    with np.load(data) as arrays:
        samples = {key: arrays[key] for key in arrays.files}
    os.chdir(Path(out).parent)  # where the peers drop their stray files
    run = {"modelopt-int8": _modelopt, "inc-int8": _inc}[variant]
    run(Path(fp32), Path(out), samples)
    _inline(Path(out))


def _modelopt(fp32: Path, out: Path, data: Batch) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(os.fspath(fp32), quantize_mode="int8", calibration_data=data,
             calibration_eps=["cpu"], high_precision_dtype="fp32", dq_only=True, simplify=True,
             output_path=os.fspath(out), log_level="ERROR")


def _inc(fp32: Path, out: Path, data: Batch) -> None:
    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import config, quantize

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> Batch | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches: Any = iter(batched(data))

    quantize(os.fspath(fp32), os.fspath(out), config.StaticQuantConfig(Reader()))


def _inline(path: Path) -> None:
    """Save ``path`` with its weights inside (so that its size is the model's) and remove the
    external data files it used."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    sides = {entry.value for tensor in model.graph.initializer
             for entry in tensor.external_data if entry.key == "location"}
    if not sides:
        return
    onnx.load_external_data_for_model(model, os.fspath(path.parent))
    onnx.save(model, os.fspath(path))
    for side in sides:
        (path.parent / side).unlink(missing_ok=True)
