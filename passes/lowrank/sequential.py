"""Factoring layer after layer on what each layer sees once the layers before it are
factored (``lowrank(sequential=true)``), so errors do not pile up through the depth.

For a layer with original input ``x`` and current input ``x~`` (earlier layers already
factored), the best rank-``r`` ``W'`` for ``min E||W x - W' x~||^2`` is the whitened
truncation (:func:`.factor.decompose` with ``H~ = E[x~ x~^T]``) of the least-squares map
``P = (W E[x x~^T] + l W) (H~ + l I)^-1``: the error splits into what no linear map of
``x~`` can recover plus ``||(P - W') S~||^2``. The ridge ``l`` shrinks ``P`` toward ``W``,
so with nothing factored before (``x~ = x``) ``P = W`` exactly. Layers reading one value
(a transformer's Q, K and V) share a calibration run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxpress.backends.ort_runner import Runner
from onnxpress.ir.layers import features_of
from onnxpress.passes.activations import with_outputs
from onnxpress.passes.calibration_data import Batch
from onnxpress.passes.lowrank import rewrite
from onnxpress.passes.lowrank.factor import Spectrum, decompose
from onnxpress.passes.lowrank.sites import Site


def factor_in_order(model: ir.Model, chosen: Sequence[tuple[Site, int]],
                    batches: Sequence[Batch], damp: float) -> list[tuple[Site, Spectrum]]:
    """Factor each ``(site, rank)`` in graph order, refitted to the current model's
    inputs; the spectra used, per site."""
    position = {node: i for i, node in enumerate(model.graph)}
    groups: dict[str, list[tuple[Site, int]]] = {}
    for site, rank in sorted(chosen, key=lambda item: position[item[0].node]):
        groups.setdefault(site.node.inputs[0].name, []).append((site, rank))
    original = Runner(with_outputs(model.clone(), list(groups)))
    done = []
    for name, members in groups.items():
        current = Runner(with_outputs(model, [name]))
        pairs = [(original.run(batch)[name], current.run(batch)[name]) for batch in batches]
        for site, rank in members:
            gram, cross, count = _moments(site.node, pairs)
            spectrum = decompose(_target(site.matrix, gram / count, cross / count, damp),
                                 gram / count, damp)
            rewrite.factor(model.graph, site.node, site.stored, *spectrum.factors(rank))
            done.append((site, spectrum))
    return done


def _moments(node: ir.Node, pairs: list[tuple[np.ndarray, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """``sum x~ x~^T``, ``sum x x~^T`` and the row count over the batches' features."""
    gram = cross = None
    count = 0
    for x, seen in pairs:
        rows, now = (features_of(node, np.asarray(v, np.float64)) for v in (x, seen))
        gram = now.T @ now if gram is None else gram + now.T @ now
        cross = rows.T @ now if cross is None else cross + rows.T @ now
        count += len(now)
    assert gram is not None and cross is not None
    return gram, cross, count


def _target(weight: np.ndarray, gram: np.ndarray, cross: np.ndarray, damp: float) -> np.ndarray:
    ridge = damp * max(float(np.mean(np.diag(gram))), 1e-30)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), (weight @ cross + ridge * weight).T).T
