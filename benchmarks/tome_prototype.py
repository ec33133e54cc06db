"""The naive prototype issue 7 measures the pass against: ToMe applied to the PyTorch zoo
ViT (the tests' reference forward, ``tests/passes/tome_reference.py``: argsort, gather,
scatter_reduce, a token-size tensor, proportional attention) and exported by the dynamo
exporter, with nothing done to the exported graph.

Run as a child process (``python tome_prototype.py NAME FOLDER R``), like
``baseline_export``, so that torch never loads into the process that times ONNX Runtime;
the file is cached as ``FOLDER/prototype-rR.onnx``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "tests" / "passes"


def prototype(name: str, folder: Path, r: int) -> Path:
    """The exported prototype for zoo model ``name`` at constant ``r``, built on first use;
    raises RuntimeError if the export fails."""
    path = folder / f"prototype-r{r}.onnx"
    if not path.is_file():
        proc = subprocess.run([sys.executable, __file__, name, str(folder), str(r)],
                              env=dict(os.environ, PYTHONWARNINGS="ignore"),
                              capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"prototype export of {name} failed: "
                               f"{lines[-1] if lines else f'exit {proc.returncode}'}")
    return path


def _export(name: str, folder: Path, r: int) -> None:
    import torch

    sys.path.insert(0, str(REFERENCE))
    from tome_reference import reference

    from onnxpress.frontends.torch_export import export_onnx
    from onnxpress.models.zoo import ZOO

    entry = ZOO[name]
    vit = entry.build()
    if not hasattr(vit, "blocks"):
        raise SystemExit(f"{name} is not a zoo ViT: no prototype")

    class Prototype(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return reference(self.vit, pixel_values, [r] * len(self.vit.blocks))

    target = folder / f"prototype-r{r}.onnx"
    partial = folder / f"prototype-r{r}.partial.onnx"
    export_onnx(Prototype(), entry.example_inputs(2), partial, input_names=["pixel_values"],
                output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}},
                exporter="dynamo")
    partial.replace(target)


if __name__ == "__main__":
    _export(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
