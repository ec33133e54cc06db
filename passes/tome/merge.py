"""ToMe's bipartite soft matching as ONNX ops (Bolya et al., ICLR 2023; the reference
``bipartite_soft_matching`` and ``merge_wavg``), for one block with a static token count.

With ``N`` tokens, keys ``k^T [B, H, d, N]`` and ``r`` merges:

- metric = the keys averaged over heads, L2-normalised, ``[B, N, d]``;
- A = even positions (``Na`` tokens), B = odd positions; scores = A B^T ``[B, Na, Nb]``;
  protected leading tokens (CLS at 0, a distillation token at 1) get ``-inf`` rows (in A)
  or columns (in B), so they never merge and nothing merges into them;
- each A token's best B match (ReduceMax / ArgMax); the ``r`` A tokens with the highest
  best score (``TopK(r)``, not a full sort) merge: ``x * size`` and ``size`` are
  scatter-added into their match, then divided by the summed size;
- output: the unmerged A tokens in their original order (a second ``TopK`` over
  ``Na - position`` with the merged ones zeroed), then all B tokens: ``[B, N - r, C]``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.builder import Builder


class Merger:
    """Builds the merge of one block on a Builder; ``opset`` picks attribute or input axes."""

    def __init__(self, builder: Builder, opset: int, stem: str) -> None:
        self.b, self.opset, self.stem = builder, opset, stem

    def _const(self, array: np.ndarray, name: str) -> ir.Value:
        return self.b.initializer(array, f"{self.stem}_{name}")

    def _ints(self, values: list[int], name: str) -> ir.Value:
        return self._const(np.array(values, np.int64), name)

    def _reduce(self, op: str, x: ir.Value, axis: int) -> ir.Value:
        if self.opset >= 18:
            return self.b.op(op, [x, self._ints([axis], f"{op}_axes")], {"keepdims": 0})
        return self.b.op(op, [x], {"axes": [axis], "keepdims": 0})

    def _half(self, x: ir.Value, start: int, tokens: int) -> ir.Value:
        return self.b.op("Slice", [x, self._ints([start], f"start{start}"),
                                   self._ints([tokens], "end"), self._ints([1], "axis"),
                                   self._ints([2], "step")])

    def plan(self, keys: ir.Value, tokens: int, r: int, protected: int
             ) -> tuple[ir.Value, ir.Value, ir.Value]:
        """``(unmerged A indices [B, Na - r], merged A indices [B, r], their B match
        [B, r])`` from the block's keys."""
        b = self.b
        metric = b.op("Transpose", [self._reduce("ReduceMean", keys, 1)], {"perm": [0, 2, 1]})
        metric = b.op("LpNormalization", [metric], {"axis": -1, "p": 2})
        a, other = self._half(metric, 0, tokens), self._half(metric, 1, tokens)
        scores = b.op("MatMul", [a, b.op("Transpose", [other], {"perm": [0, 2, 1]})])
        na, nb = (tokens + 1) // 2, tokens // 2
        if protected:
            mask = np.zeros((na, nb), np.float32)
            for position in range(protected):
                if position % 2 == 0:
                    mask[position // 2, :] = -np.inf
                else:
                    mask[:, position // 2] = -np.inf
            scores = b.op("Add", [scores, self._const(mask, "protect")])
        best = self._reduce("ReduceMax", scores, -1)
        match = b.op("ArgMax", [scores], {"axis": -1, "keepdims": 0})
        _, merged = b.op_multi("TopK", [best, self._ints([r], "r")],
                               {"axis": -1, "largest": 1, "sorted": 1}, num_outputs=2)
        order = self._const((na - np.arange(na, dtype=np.float32))[None], "order")
        order = b.op("Expand", [order, b.op("Shape", [best])])
        zeros = b.op("Mul", [b.op("Cast", [merged], {"to": ir.DataType.FLOAT}),
                             self._const(np.array(0, np.float32), "zero")])
        kept = b.op("ScatterElements", [order, merged, zeros], {"axis": 1})
        _, unmerged = b.op_multi("TopK", [kept, self._ints([na - r], "kept")],
                                 {"axis": -1, "largest": 1, "sorted": 1}, num_outputs=2)
        target = b.op("GatherElements", [match, merged], {"axis": 1})
        return unmerged, merged, target

    def merge(self, x: ir.Value, tokens: int, plan: tuple[ir.Value, ir.Value, ir.Value]
              ) -> ir.Value:
        """``x [B, N, C]`` with the planned tokens scatter-added into their matches."""
        b = self.b
        unmerged, merged, target = plan
        a, other = self._half(x, 0, tokens), self._half(x, 1, tokens)
        last = self._ints([-1], "last")
        unm = b.op("GatherND", [a, b.op("Unsqueeze", [unmerged, last])], {"batch_dims": 1})
        src = b.op("GatherND", [a, b.op("Unsqueeze", [merged, last])], {"batch_dims": 1})
        index = b.op("Expand", [b.op("Unsqueeze", [target, last]), b.op("Shape", [src])])
        dst = b.op("ScatterElements", [other, index, src], {"axis": 1, "reduction": "add"})
        return b.op("Concat", [unm, dst], {"axis": 1})
