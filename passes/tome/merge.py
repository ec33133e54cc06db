"""ToMe's bipartite soft matching as ONNX ops (Bolya et al., ICLR 2023; the reference
``bipartite_soft_matching`` and ``merge_wavg``), for one block with a static token count,
and the token-dropping alternative.

With ``N`` tokens and ``r`` merges:

- metric = the keys summed over heads (the mean, up to a factor the normalisation
  removes), L2-normalised. Where the key projection is known it is computed from the
  block's normed input with the projection's head blocks summed (``[C, d]``), so that
  nothing else reads the attention's head split and ``fuse-for-ort`` can still fuse it;
  otherwise the keys ``k^T [B, H, d, N]`` are summed by a ``[1, H]`` product of ones;
- A = even positions, B = odd ones; every A token's best B match: the full ``N x N``
  similarity (one product, cheaper in ONNX Runtime than slicing the halves apart) with
  ``-inf`` everywhere but A rows x B columns; protected leading tokens (CLS at 0, a
  distillation token at 1) get ``-inf`` rows or columns too, so they never merge and
  nothing merges into them; one ``TopK(1)`` gives each row's best score and match;
- the ``r`` A tokens with the highest best score merge (``TopK(r)``, not a full sort);
- output: the unmerged A tokens in their original order, then all B tokens, ``[B, N - r,
  C]``. One ``TopK`` over a position key (``p`` for A, ``N + p`` for B, ``3N`` for merged
  A tokens) yields exactly that order, so the stream is gathered once from ``x`` rather
  than sliced into halves, gathered and concatenated; the merged tokens are then
  scatter-added into their match's output slot.

About 25 small nodes per block: at batch 1 ONNX Runtime's cost per node, not arithmetic,
is most of what a merge costs. The metric and similarity products are marked to stay in
float (:mod:`onnxpress.ir.marks`): quantizing them would change which tokens merge.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.builder import Builder
from onnxpress.ir.marks import keep_float

#: (kept positions [B, N - r] in output order, merged A positions [B, r, 1], the output
#: slots they merge into [B, r, 1])
Plan = tuple[ir.Value, ir.Value, ir.Value]
WHY = "tome: the token similarity that chooses the merges"


def mask(tokens: int, protected: int) -> np.ndarray:
    """``0`` where an A row may merge into a B column, else ``-inf``."""
    position = np.arange(tokens)
    allowed = (position[:, None] % 2 == 0) & (position[None, :] % 2 == 1)
    allowed &= (position[:, None] >= protected) & (position[None, :] >= protected)
    return np.where(allowed, 0.0, -np.inf).astype(np.float32)


class Merger:
    """Builds the merge of one block on a Builder; ``opset`` picks attribute or input axes."""

    def __init__(self, builder: Builder, opset: int, stem: str) -> None:
        self.b, self.opset, self.stem = builder, opset, stem

    def _const(self, array: np.ndarray, name: str) -> ir.Value:
        return self.b.initializer(np.asarray(array), f"{self.stem}_{name}")

    def _ints(self, values: int | list[int] | np.ndarray, name: str) -> ir.Value:
        return self._const(np.asarray(values, np.int64), name)

    def _reduce(self, op: str, x: ir.Value, axis: int) -> ir.Value:
        if self.opset >= (13 if op == "ReduceSum" else 18):  # when axes became an input
            return self.b.op(op, [x, self._ints([axis], f"{op}_axes")], {"keepdims": 0})
        return self.b.op(op, [x], {"axes": [axis], "keepdims": 0})

    def _head_sum(self, x: ir.Value, rest: list[int], why: str) -> ir.Value:
        """``x [B, H, ...]`` summed over heads, reshaped to ``[B, *rest]``: a ``[1, H]``
        product of ones, since ONNX Runtime's ReduceSum over a middle axis costs 60 us
        here, the product under 5. The sum, not the mean: what reads it normalises or
        ranks."""
        heads = x.shape[1] if x.shape is not None and len(x.shape) >= 3 else None
        if not isinstance(heads, int):
            return self.b.op("Reshape", [self._reduce("ReduceSum", x, 1),
                                         self._ints([0, *rest], "rest")])
        rows = self.b.op("Reshape", [x, self._ints([0, heads, -1], "rows")])
        total = self.b.op("MatMul", [self._const(np.ones((1, heads), np.float32), "heads"), rows])
        keep_float(total.producer(), why)
        return self.b.op("Reshape", [total, self._ints([0, *rest], "rest")])

    def _without(self, gone: ir.Value, tokens: int, r: int, bipartite: bool) -> ir.Value:
        """The positions left ``[B, N - r]`` when the tokens ``gone [B, r, 1]`` leave, in
        order: one TopK over a position key, ``3N`` for the ones leaving and, when
        ``bipartite``, ``N + p`` for B tokens so that they follow the A tokens."""
        b, n = self.b, tokens
        position = np.arange(n)
        key = np.where(bipartite & (position % 2 == 1), n + position, position)
        hit = b.op("Equal", [gone, self._ints(position, "positions")])  # [B, r, N]
        key = b.op("Where", [hit, self._const(np.float32(3 * n), "gone"),
                             self._const(key.astype(np.float32), "key")])
        _, kept = b.op_multi("TopK", [self._reduce("ReduceMax", key, 1),
                                      self._ints([n - r], "kept")],
                             {"axis": -1, "largest": 0, "sorted": 1}, num_outputs=2)
        return kept

    def _gather(self, x: ir.Value, positions: ir.Value) -> ir.Value:
        """``x [B, N, C]`` at ``positions [B, K, 1]``: ``[B, K, C]``."""
        return self.b.op("GatherND", [x, positions], {"batch_dims": 1})

    def _column(self, x: ir.Value) -> ir.Value:
        return self.b.op("Unsqueeze", [x, self._ints([-1], "last")])

    def keys_metric(self, keys: ir.Value, tokens: int) -> ir.Value:
        """The metric from the score product's keys ``k^T [B, H, d, N]``: ``[B, d, N]``."""
        return self._head_sum(keys, [-1, tokens], WHY)

    def plan(self, metric: ir.Value, tokens: int, r: int, protected: int, *,
             tokens_last: bool) -> Plan:
        """``metric``: ``[B, d, N]`` when ``tokens_last``, else ``[B, N, d]``."""
        b, n = self.b, tokens
        metric = b.op("LpNormalization", [metric], {"axis": 1 if tokens_last else 2, "p": 2})
        flipped = b.op("Transpose", [metric], {"perm": [0, 2, 1]})
        pair = [flipped, metric] if tokens_last else [metric, flipped]
        similarity = b.op("MatMul", pair)
        keep_float(similarity.producer(), WHY)
        scores = b.op("Add", [similarity, self._const(mask(n, protected), "mask")])
        # one TopK(1) for the best match and its score; TopK(r) over those picks the merges
        best, match = b.op_multi("TopK", [scores, self._ints([1], "one")],
                                 {"axis": -1, "largest": 1, "sorted": 1}, num_outputs=2)
        _, merged = b.op_multi("TopK", [best, self._ints([r], "r")],
                               {"axis": 1, "largest": 1, "sorted": 1}, num_outputs=2)
        kept_a = (n + 1) // 2 - r
        position = np.arange(n)
        slot = np.where(position % 2 == 1, kept_a + position // 2, 0)
        target = b.op("GatherElements", [match, merged], {"axis": 1})  # [B, r, 1]
        return (self._without(merged, n, r, bipartite=True), merged,
                b.op("Gather", [self._ints(slot, "slots"), target]))

    def merge(self, x: ir.Value, plan: Plan, width: int | None) -> ir.Value:
        """``x [B, N, C]`` with the planned tokens scatter-added into their matches; ``width``:
        C when known."""
        b = self.b
        kept, merged, slot = plan
        base = self._gather(x, self._column(kept))
        source = self._gather(x, merged)
        shape = (self._ints([1, 1, width], "index_shape") if isinstance(width, int)
                 else b.op("Shape", [source]))  # a constant shape spares a node
        index = b.op("Expand", [slot, shape])
        return b.op("ScatterElements", [base, index, source], {"axis": 1, "reduction": "add"})

    def drop(self, probabilities: ir.Value, x: ir.Value, tokens: int, r: int,
             protected: int) -> ir.Value:
        """``x [B, N, C]`` without the ``r`` tokens the first token (CLS) attends to least,
        summed over heads (``probabilities [B, H, N, N]``, the block's softmax); the
        protected ones always stay, and the rest keep their order."""
        b, n = self.b, tokens
        row = b.op("Gather", [probabilities, self._ints(0, "cls")], {"axis": 2})  # [B, H, N]
        attention = self._head_sum(row, [n], "tome: the CLS attention that chooses the drops")
        guard = np.where(np.arange(n) < protected, np.inf, 0).astype(np.float32)
        attention = b.op("Add", [attention, self._const(guard, "guard")])
        _, gone = b.op_multi("TopK", [attention, self._ints([r], "r")],
                             {"axis": -1, "largest": 0, "sorted": 1}, num_outputs=2)
        kept = self._without(self._column(gone), n, r, bipartite=False)
        return self._gather(x, self._column(kept))
