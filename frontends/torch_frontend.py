"""PyTorch in: ``from_torch(module, example_inputs)`` exports with ``torch.onnx.export`` and
loads the result into the IR.

The dynamo exporter is the default; ``exporter="torchscript"`` picks the legacy tracer, and
with ``fallback=True`` a dynamo failure retries with it (the model's load notes say so).
torch is imported only here, and only when called.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.frontends.onnx_loader import load
from onnxpress.ir.marks import LOAD_NOTES

logger = logging.getLogger(__name__)

Exporter = Literal["dynamo", "torchscript"]


def from_torch(
    module: Any,
    example_inputs: Sequence[Any] | Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    exporter: Exporter = "dynamo",
    fallback: bool = True,
    opset: int | None = None,
) -> ir.Model:
    """Export ``module`` called on ``example_inputs`` and return the IR model.

    ``dynamic_axes`` takes the TorchScript exporter's form (``{"image": {0: "batch"}}``) for
    both exporters. Names default to ``input_0..`` / ``output_0..``.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BadInputError(
            "PyTorch is not installed: pip install torch==2.13.0, then onnxpress[torch]"
        ) from None
    from onnxpress.frontends.torch_export import export_onnx

    inputs = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (
        example_inputs,)
    names_in = list(input_names or [f"input_{i}" for i in range(len(inputs))])
    names_out = list(output_names or ["output_0"])
    tried = [exporter] + (["torchscript"] if fallback and exporter == "dynamo" else [])
    errors = []
    with tempfile.TemporaryDirectory(prefix="onnxpress-export-") as folder:
        for choice in tried:
            path = Path(folder) / f"{choice}.onnx"
            try:
                export_onnx(module, inputs, path, input_names=names_in, output_names=names_out,
                            dynamic_axes=dynamic_axes, exporter=choice, opset=opset)
            except Exception as error:  # exporters raise many types; report each
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                errors.append(f"{choice}: {type(error).__name__}: {first}")
                logger.warning("the %s exporter failed: %s", choice, errors[-1])
                continue
            model = load(path)
            ir.external_data.load_to_model(model)  # the temporary file goes away
            model.meta.setdefault(LOAD_NOTES, []).append(
                f"exported from PyTorch with the {choice} exporter"
                + (f" after {errors[0]}" if errors else ""))
            return model
    raise BadInputError(f"cannot export {type(module).__name__}: " + "; ".join(errors))
