"""Measured sensitivity for the global budget (``lowrank(params=P,allocate=sensitivity)``):
how much the model's outputs move per unit of a layer's own truncation error.

Each layer in turn is truncated alone (its weight replaced, same shape) at the rank whose
relative squared tail is about ``PROBE``, the model runs on a few calibration batches, and
the outputs' relative squared error against the untouched model, divided by that tail, is
the layer's weight in the budget's objective: a layer feeding a LayerNorm's outlier
channel or the classifier counts for more than one whose error the rest of the network
washes out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxpress.backends.ort_runner import Runner
from onnxpress.ir.layers import from_matrix
from onnxpress.passes.calibration_data import Batch
from onnxpress.passes.lowrank.factor import Spectrum
from onnxpress.passes.lowrank.sites import Site

PROBE = 0.01


def measure(model: ir.Model, found: Sequence[Site], spectra: Sequence[Spectrum],
            batches: Sequence[Batch]) -> np.ndarray:
    """Per site, output error per unit of relative squared truncation error."""
    reference = [_outputs(Runner(model), batch) for batch in batches]
    energy = sum(float(np.sum(r**2)) for r in reference)
    weights = np.zeros(len(found))
    for i, (site, spectrum) in enumerate(zip(found, spectra)):
        # below full rank, so that the probe truncates something
        full = len(spectrum.values)
        rank = max(1, min(int(np.argmax(spectrum.energy <= PROBE)), full - 1))
        tail = float(spectrum.energy[rank])
        if tail <= 0:  # rank 1 (or a rank-deficient weight): nothing to lose
            continue
        left, right = spectrum.factors(rank)
        value = site.node.inputs[1]
        assert value is not None and value.const_value is not None
        saved = value.const_value
        truncated = from_matrix(site.node, site.weight, left @ right)
        value.const_value = ir.tensor(truncated.astype(site.dtype), name=value.name)
        try:
            runner = Runner(model)
            moved = sum(float(np.sum((_outputs(runner, b) - r) ** 2))
                        for b, r in zip(batches, reference))
        finally:
            value.const_value = saved
        weights[i] = moved / max(energy, 1e-30) / tail
    return weights


def _outputs(runner, batch: Batch) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in runner.run(batch).values()])
