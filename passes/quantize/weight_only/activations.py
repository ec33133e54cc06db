"""What ``weight-only`` learns from calibration data: the second moments ``H = X^T X / n`` of
each quantized weight's input (one pass over the data, every layer at once), and the input
scaling the activation-aware method applies (``x / s`` feeding ``Q(W * s)``)."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import remove_unread
from onnxpress.passes.quantize.calibrate.calibration import Observer, collect

__all__ = ["divide_input", "input_moments", "inputs_of"]


class _Gram(Observer):
    """Accumulates ``X^T X`` over the rows of ``x`` (every axis but the last); not a range
    observer (``range`` is (0, 0))."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        rows = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        gram = (rows.T @ rows).astype(np.float64)  # float32 within a batch, float64 across
        self.total = gram if self.total is None else self.total + gram
        self.count += rows.shape[0]

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(()), np.zeros(())


def input_moments(model: ir.Model, inputs: dict[ir.Value, set[str]], data: Any, *,
                  max_batches: int) -> dict[ir.Value, tuple[frozenset[str], np.ndarray]]:
    """For each weight (key of ``inputs``: the names of the activations every layer reading
    it multiplies it with; "" where one is unusable), ``(that set of names, H)`` with ``H``
    the mean of ``x^T x`` over all their rows, computed once per distinct set (q, k and v
    share theirs). Weights with an unusable or never-seen input are left out."""
    names = sorted({n for group in inputs.values() for n in group if n})
    observers = collect(model, names, data, method=_Gram, max_batches=max_batches)
    grams = {name: o for name, o in observers.items() if isinstance(o, _Gram)}
    shared: dict[frozenset[str], np.ndarray] = {}
    found: dict[ir.Value, tuple[frozenset[str], np.ndarray]] = {}
    for source, group in inputs.items():
        key = frozenset(group)
        if "" in key or not all(n in grams and grams[n].count for n in key):
            continue
        if key not in shared:
            observed = [grams[n] for n in sorted(key)]
            shared[key] = sum(g.total for g in observed if g.total is not None) / sum(
                g.count for g in observed)
        found[source] = (key, shared[key])
    return found


def divide_input(graph: ir.Graph, value: ir.Value, scale: np.ndarray,
                 readers: Iterable[ir.Node]) -> str:
    """Make ``readers`` (every reader of ``value``, or some of them) read ``value / scale``
    along its last axis: folded into the constant of the ``Mul`` that produces ``value``
    (an RMSNorm's or LayerNorm's gain) where nothing else reads either, else one new
    ``Mul``. Returns how, for the notes."""
    readers = list(readers)
    producer = value.producer()
    only_readers = {id(node) for node, _ in value.uses()} == {id(r) for r in readers} and \
        not value.is_graph_output()
    if only_readers and producer is not None and producer.op_type == "Mul" and \
            producer.domain in ("", "ai.onnx"):
        for index, operand in enumerate(producer.inputs):
            gain = constant_array(operand)
            if gain is None or operand is None or gain.dtype != np.float32 or \
                    gain.ndim < 1 or gain.shape[-1] != len(scale) or \
                    any(d != 1 for d in gain.shape[:-1]) or len(operand.uses()) != 1:
                continue
            new = Builder(graph).initializer((gain / scale).astype(np.float32),
                                             f"{operand.name}_awq")
            producer.replace_input_with(index, new)
            remove_unread([operand])
            return "folded into the gain"
    builder = Builder(graph)
    inverse = builder.initializer((1.0 / scale).astype(np.float32), f"{value.name}_awq_scale")
    divided = builder.op("Mul", [value, inverse], name=f"{value.name}_awq")
    if value.dtype is not None:
        divided.dtype, divided.shape = value.dtype, value.shape
    divided.name = f"{value.name}_awq"
    if producer is not None:
        builder.insert_after(producer)
    else:
        builder.insert_after(None)
    for reader in readers:
        for index, operand in enumerate(reader.inputs):
            if operand is value:
                reader.replace_input_with(index, divided)
    return "one Mul"


def inputs_of(targets: Iterable[Any]) -> dict[ir.Value, set[str]]:
    """The activation names each target weight is multiplied with ("" where unusable: a
    transposed or unnamed input)."""
    inputs: dict[ir.Value, set[str]] = collections.defaultdict(set)
    for target in targets:
        a = target.node.inputs[0]
        transposed = target.node.op_type == "Gemm" and (
            target.node.attributes.get_int("transA", 0) == 1)
        inputs[target.source].add("" if transposed or a is None or not a.name else a.name)
    return inputs
