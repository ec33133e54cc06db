"""The quant suite's variants (registered with ``baseline_variants.register``): int8 post-training
quantization by ONNX Runtime, by two peer tools and by onnxpress, each on the exported fp32
file with the same calibration batches.

- ``qop-u8s8``: ``quantize_static`` in QOperator format (QLinearConv, QLinearMatMul, ...),
  QUInt8 activations, QInt8 per-channel weights, MinMax calibration, on the pre-processed
  model (as ``qdq-u8s8``, whose QDQ pairs ORT fuses at load time; this one is fused offline);
- ``modelopt-int8``: NVIDIA ModelOpt, ``modelopt.onnx.quantization.quantize(quantize_mode=
  "int8")`` with its default calibration (entropy), calibrated on ONNX Runtime's CPU provider,
  ``high_precision_dtype="fp32"`` (its default, fp16, targets TensorRT, not a CPU) and
  ``dq_only=True`` (int8 weights stored with only a DequantizeLinear, not fp32 weights behind
  a Q/DQ pair) and ``simplify=True`` (its onnxslim pass; without it the exports'
  ``Shape(weight)`` nodes keep every fp32 weight alive beside the int8 one). Its QDQ
  placement is made for TensorRT;
- ``inc-int8``: Intel's onnx-neural-compressor, ``quantize`` with a default
  ``StaticQuantConfig`` (QOperator, U8S8, per-tensor weights, MinMax, after ORT's basic graph
  optimization). It writes the weights to a side file; the variant saves them inline;
- ``onnxpress-int8``: ``onnxpress.compile(fp32, "int8", calibration=batches)`` (the int8
  preset for ort-cpu: cleanup, quantize, fold-qdq), then ``onnxpress.save``.

The raw dynamo exports compute Conv biases as ``Expand(CastLike(0, input), Shape(weight))``,
which the QOperator quantizers (``qop-u8s8``, ``inc-int8``) reject ("'NoneType' object has no
attribute 'data_type'": the bias is no initializer), and onnx-neural-compressor writes a
MiniLM that ONNX Runtime cannot load. When one of the three fails on the export (or writes a
file ONNX Runtime cannot load), it is retried on the export after onnxpress's ``cleanup``
and the cell carries a note saying so.

The peers run in a child process (``python quant_variants.py PEER ...``): ModelOpt imports
torch, which must not load into the process that times ONNX Runtime, and a peer's crash or
logging set-up stays there. A peer that is not installed, or that fails on a model (cleaned
or not), leaves the reason in that cell (:class:`PeerUnavailable` for a missing install) and the
suite goes on. Install them with ``pip install -e .[peers]`` (see pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from baseline_variants import (
    Batch,
    BuildNote,
    Calibration,
    VariantBuilder,
    _first_line,
    _Reader,
    preprocessed,
    register,
)
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

#: variant -> (its top-level package: finding a submodule would import the package, and
#: modelopt's imports torch; the distribution; how to install it)
PEERS = {
    "modelopt-int8": ("modelopt", "nvidia-modelopt", "pip install -e .[peers]"),
    "inc-int8": ("onnx_neural_compressor", "onnx-neural-compressor",
                 "pip install --no-deps onnx-neural-compressor && pip install prettytable"),
}
PEER_TIMEOUT_S = 1800
#: variants whose builders the baseline suite shares: their cached files are reused
SHARED = ("fp32", "dynamic", "qdq-u8s8", "qdq-s8s8")
#: files of a baseline model folder that make up its export (and pre-processing)
EXPORT_FILES = ("fp32.onnx", "calibration.npz", "compare.npz", "fp32.pre.onnx", "fp32.pre.notes")


class PeerUnavailable(RuntimeError):
    """A peer tool is not installed: its cells are skipped with this reason."""


def _qop_u8s8(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
    quantize_static(
        preprocessed(fp32_path), out_path, _Reader(calibration),
        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
    )
    return out_path


@register("onnxpress-int8")
def onnxpress_int8(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
    import onnxpress

    model = onnxpress.compile(fp32_path, "int8", calibration=calibration.batches)
    return onnxpress.save(model, out_path)


def _peer(variant: str) -> VariantBuilder:
    def build(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
        package, distribution, install = PEERS[variant]
        if importlib.util.find_spec(package) is None:
            raise PeerUnavailable(f"{distribution} is not installed ({install})")
        with tempfile.TemporaryDirectory(prefix="quant-peer-") as tmp:
            data, result = Path(tmp) / "calibration.npz", Path(tmp) / "result.json"
            np.savez(data, **_concatenated(calibration.batches))
            command = [sys.executable, os.fspath(Path(__file__)), variant, os.fspath(fp32_path),
                       os.fspath(out_path), os.fspath(data), os.fspath(result)]
            try:
                proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp,
                                      timeout=PEER_TIMEOUT_S,
                                      env=dict(os.environ, PYTHONWARNINGS="ignore"))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{variant} took over {PEER_TIMEOUT_S}s") from None
            said = json.loads(result.read_text()) if result.is_file() else {}
            if proc.returncode != 0 or "error" in said or not out_path.is_file():
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                raise RuntimeError(said.get("error") or (lines[-1] if lines else
                                                         f"exit {proc.returncode}"))
        return out_path

    return build


def _or_on_cleaned(builder: VariantBuilder, what: str) -> VariantBuilder:
    """``builder``, retried on :func:`cleaned` (with a note) if it fails on the export or
    writes a file that ONNX Runtime cannot load."""

    def build(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BuildNote)
            try:
                path = builder(fp32_path, out_path, calibration)
                _loads(path)
            except PeerUnavailable:
                raise
            except Exception as error:  # noqa: BLE001 - retried on the cleaned model below
                failure = _first_line(error)
            else:
                failure = ""
        if not failure:
            for warning in caught:  # the first try's notes, now that they hold
                warnings.warn(warning.message, stacklevel=2)
            return path
        out_path.unlink(missing_ok=True)
        path = builder(cleaned(fp32_path), out_path, calibration)
        warnings.warn(BuildNote(f"{what} failed on the export ({failure}); quantized the export "
                                "after onnxpress `cleanup` instead"), stacklevel=2)
        return path

    return build


register("qop-u8s8")(_or_on_cleaned(_qop_u8s8, "quantize_static (QOperator)"))
register("modelopt-int8")(_or_on_cleaned(_peer("modelopt-int8"), "ModelOpt"))
register("inc-int8")(_or_on_cleaned(_peer("inc-int8"), "onnx-neural-compressor"))


def _loads(path: Path) -> None:
    """Raise what ONNX Runtime says if it cannot load ``path``."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def cleaned(fp32_path: Path) -> Path:
    """The export after onnxpress's ``cleanup`` (constants folded, BatchNorm folded into the
    Convs, shape chains made constant), next to it, built once: the fallback input of the
    quantizers that fail on the raw dynamo exports (Conv biases computed by
    ``Expand(CastLike(0, input), Shape(weight))`` are not initializers)."""
    out = fp32_path.with_name(f"{fp32_path.stem}.cleanup.onnx")
    if not out.exists():
        import onnxpress

        onnxpress.save(onnxpress.compile(fp32_path, "cleanup"), out)
    return out


def _concatenated(batches: list[Batch]) -> Batch:
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def link_baseline_cache(baseline: Path, quant: Path) -> bool:
    """Fill ``quant`` (a model's quant-suite folder) from ``baseline`` (its baseline-suite
    folder): the export, the pre-processed file and the shared variants' files, hard-linked
    (copied across file systems). Returns whether it did; it does nothing when ``quant``
    already holds an export or ``baseline`` holds none. ``model.json`` comes last, as it marks
    the export complete."""
    if (quant / "model.json").is_file() or not (baseline / "model.json").is_file():
        return False
    quant.mkdir(parents=True, exist_ok=True)
    names = [n for n in EXPORT_FILES if (baseline / n).is_file()]
    for variant in SHARED:
        meta = baseline / f"{variant}.json"
        if meta.is_file():
            built = json.loads(meta.read_text())["file"]
            if (baseline / built).is_file():
                names += [built, meta.name]  # the file first: the .json marks it built
    for name in dict.fromkeys([*names, "model.json"]):
        target = quant / name
        target.unlink(missing_ok=True)
        try:
            os.link(baseline / name, target)
        except OSError:
            shutil.copy2(baseline / name, target)
    return True


# --- the child process: one peer, one model ---------------------------------------------

def _batches(data: Batch, size: int = 8) -> list[Batch]:
    count = len(next(iter(data.values())))
    return [{k: v[i : i + size] for k, v in data.items()} for i in range(0, count, size)]


def _run_modelopt(fp32: Path, out: Path, data: Batch) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(os.fspath(fp32), quantize_mode="int8", calibration_data=data,
             calibration_eps=["cpu"], high_precision_dtype="fp32", dq_only=True, simplify=True,
             output_path=os.fspath(out), log_level="ERROR")


def _run_inc(fp32: Path, out: Path, data: Batch) -> None:
    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import config, quantize

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> Batch | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = iter(_batches(data))

    quantize(os.fspath(fp32), os.fspath(out), config.StaticQuantConfig(Reader()))


def _inline(path: Path) -> None:
    """Save ``path`` with its weights inside it (so that its size is the model's) and remove
    the external data files it used."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    sides = {entry.value for tensor in model.graph.initializer
             for entry in tensor.external_data if entry.key == "location"}
    if not sides:
        return
    onnx.load_external_data_for_model(model, os.fspath(path.parent))
    onnx.save(model, os.fspath(path))
    for side in sides:
        (path.parent / side).unlink(missing_ok=True)


def _child(variant: str, fp32: Path, out: Path, data_path: Path, result: Path) -> None:
    import logging

    logging.disable(logging.WARNING)  # the peers' per-tensor chatter
    with np.load(data_path) as arrays:
        data = {key: arrays[key] for key in arrays.files}
    run = {"modelopt-int8": _run_modelopt, "inc-int8": _run_inc}[variant]
    try:
        run(fp32, out, data)
        _inline(out)
        result.write_text(json.dumps({"ok": True}))
    except Exception as error:  # noqa: BLE001 - a peer's failure is the cell's reason
        result.write_text(json.dumps({"error": _first_line(error)}))
        raise


if __name__ == "__main__":
    _child(sys.argv[1], *(Path(a) for a in sys.argv[2:6]))
