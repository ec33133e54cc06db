"""Export a PyTorch module to an ONNX file, with either of torch's two exporters.

``exporter="torchscript"`` is the legacy tracer (``torch.onnx.export(..., dynamo=False)``);
``exporter="dynamo"`` is the ``torch.export``-based exporter, run with ``optimize=False`` so
that the raw exported graph (with its redundant Shape/Gather/Concat, Cast, Identity...
nodes) is written, which is what graph-cleanup tools should be measured on.

torch is imported inside the function only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _dynamic_shapes(
    input_names: Sequence[str],
    n_inputs: int,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]],
) -> tuple[Any, ...]:
    """``dynamic_axes`` (the TorchScript exporter's form) -> ``torch.export`` dynamic_shapes.

    Axes that share a name share one ``torch.export.Dim``; unnamed axes get ``<input>_<axis>``.
    """
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any] | None] = []
    for i in range(n_inputs):
        name = input_names[i] if i < len(input_names) else None
        axes = dynamic_axes.get(name) if name is not None else None
        if not axes:
            shapes.append(None)
            continue
        named = dict(axes) if isinstance(axes, Mapping) else {a: f"{name}_{a}" for a in axes}
        shapes.append({a: dims.setdefault(d, Dim(d)) for a, d in named.items()})
    return tuple(shapes)


def export_onnx(
    module: "torch.nn.Module",
    example_inputs: tuple[Any, ...],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    exporter: Literal["torchscript", "dynamo"] = "torchscript",
    opset: int | None = None,
) -> str:
    """Export ``module`` (eval mode) called on ``example_inputs`` to ``path``; return the path.

    ``dynamic_axes`` uses the TorchScript exporter's form, e.g.
    ``{"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}}``.
    For the dynamo exporter it is translated to ``torch.export`` ``dynamic_shapes`` (outputs
    follow from the inputs); note that ``torch.export`` specialises a dimension whose example
    size is 0 or 1, so example inputs need a batch of at least 2 for a dynamic batch axis.
    Weights are stored inside the file (no external data; the models here are < 2 GB).

    ``opset`` defaults to 17 for TorchScript and 18 for dynamo: 18 is the dynamo exporter's
    lowest native opset, and its down-conversion to 17 fails on some graphs (ResNet's
    ReduceMean), leaving 18 anyway after a long warning.
    """
    import torch

    if opset is None:
        opset = 18 if exporter == "dynamo" else 17
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    module = module.eval()
    with torch.no_grad(), _without_mha_fastpath(torch):
        if exporter == "torchscript":
            torch.onnx.export(
                module,
                tuple(example_inputs),
                path,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: v for k, v in (dynamic_axes or {}).items()} or None,
                opset_version=opset,
                dynamo=False,
            )
        elif exporter == "dynamo":
            dynamic_shapes = None
            if dynamic_axes:
                dynamic_shapes = _dynamic_shapes(input_names, len(example_inputs), dynamic_axes)
            program = torch.onnx.export(
                module,
                tuple(example_inputs),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                optimize=False,
                verify=False,
            )
            program.save(path, external_data=False)
        else:
            raise ValueError(f"unknown exporter {exporter!r} (torchscript or dynamo)")
    return path


@contextlib.contextmanager
def _without_mha_fastpath(torch: Any) -> Iterator[None]:
    """``nn.MultiheadAttention`` in eval mode takes a fused fast path
    (``aten::_native_multi_head_attention``) that the TorchScript exporter cannot write;
    the plain path it falls back to computes the same thing in exportable ops."""
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        yield
        return
    enabled = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(enabled)
