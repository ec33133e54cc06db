"""ToMe's bipartite soft matching as ONNX ops (Bolya et al., ICLR 2023; the reference
``bipartite_soft_matching`` and ``merge_wavg``), for one block with a static token count,
and the token-dropping alternative.

With ``N`` tokens and ``r`` merges:

- metric = the keys summed over heads (the mean, up to a factor the normalisation
  removes), L2-normalised. Where the key projection is known it is computed from the
  block's normed input with the projection's head blocks summed (``[C, d]``), so that
  nothing else reads the attention's head split and ``fuse-for-ort`` can still fuse it;
  otherwise the keys ``k^T [B, H, d, N]`` are summed by a ``[1, H]`` product of ones;
- A = even positions, B = odd ones, both past the protected leading tokens (CLS at 0, a
  distillation token at 1), which thus never merge and take in nothing; every A token's
  best B match: the ``A x B`` similarity of the two strided halves (a quarter of the
  ``N x N`` product and no ``-inf`` mask), one ``TopK(1)`` for each row's best score
  and match;
- the ``r`` A tokens with the highest best score merge (``TopK(r)``, not a full sort);
- output: the unmerged A tokens in their original order, then all B tokens, ``[B, N - r,
  C]``. One ``TopK`` over a position key (``p`` for A, ``N + p`` for B, ``3N`` for merged
  A tokens) yields exactly that order, so the stream is gathered once from ``x`` rather
  than sliced into halves, gathered and concatenated; the merged tokens then move their
  match towards them by their share of the summed size (:meth:`Merger.merge`), added in
  by ScatterND.

About 30 small nodes per block: at batch 1 ONNX Runtime's cost per node, not arithmetic,
is most of what a merge costs. The metric and similarity products are marked to stay in
float (:mod:`onnxpress.ir.marks`): quantizing them would change which tokens merge.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from onnxpress.ir.builder import Builder
from onnxpress.ir.marks import keep_float


class Plan(NamedTuple):
    """One block's merge, as int64 index columns."""

    kept: ir.Value  # [B, N - r, 1]: the positions left, in output order
    merged: ir.Value  # [B, r, 1]: the A tokens that merge
    target: ir.Value  # [B, r, 1]: the B token each merges into
    slot: ir.Value  # [B, r, 1]: that B token's output position


WHY = "tome: the token similarity that chooses the merges"


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
        """The positions left ``[B, N - r, 1]`` when the tokens ``gone [B, r, 1]`` leave, in
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
        return self._column(kept)

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
        axis = 2 if tokens_last else 1
        metric = b.op("LpNormalization", [metric], {"axis": 1 if tokens_last else 2, "p": 2})
        # the A rows and B columns that may merge: even and odd positions past the
        # protected ones, so the similarity is a quarter of N x N and needs no mask
        first_a, first_b = protected + protected % 2, protected | 1
        halves = [b.op("Slice", [metric, self._ints([start], f"from{start}"),
                                 self._ints([n], "to"), self._ints([axis], "axis"),
                                 self._ints([2], "step")]) for start in (first_a, first_b)]
        flip = 0 if tokens_last else 1
        halves[flip] = b.op("Transpose", [halves[flip]], {"perm": [0, 2, 1]})
        similarity = b.op("MatMul", halves)  # [B, A, B]
        keep_float(similarity.producer(), WHY)
        # one TopK(1) for the best match and its score; TopK(r) over those picks the merges
        best, match = b.op_multi("TopK", [similarity, self._ints([1], "one")],
                                 {"axis": -1, "largest": 1, "sorted": 1}, num_outputs=2)
        _, chosen = b.op_multi("TopK", [best, self._ints([r], "r")],
                               {"axis": 1, "largest": 1, "sorted": 1}, num_outputs=2)
        merged = b.op("Gather", [self._ints(np.arange(first_a, n, 2), "a_positions"), chosen])
        column = b.op("GatherElements", [match, chosen], {"axis": 1})  # B token j
        target = b.op("Gather", [self._ints(np.arange(first_b, n, 2), "b_positions"), column])
        # B token j (position first_b + 2j) lands after the unmerged A tokens
        slot = b.op("Add", [column, self._ints((n + 1) // 2 - r + first_b // 2, "b_slots")])
        return Plan(self._without(merged, n, r, bipartite=True), merged, target, slot)

    def batch_rows(self, like: ir.Value, r: int) -> ir.Value:
        """``[B, r, 1]`` holding each row's batch index, for ScatterND's index tuples;
        ``like``: any ``[B, ...]`` value. Built once per distinct ``r`` and shared."""
        b = self.b
        batch = b.op("Squeeze", [b.op("Shape", [like], {"start": 0, "end": 1})])
        rows = b.op("Range", [self._ints(0, "zero"), batch, self._ints(1, "one_step")])
        rows = b.op("Unsqueeze", [rows, self._ints([1, 2], "row_axes")])
        return b.op("Expand", [rows, self._ints([1, r, 1], "rows_shape")])

    def merge(self, x: ir.Value, size: ir.Value, plan: Plan, rows: ir.Value
              ) -> tuple[ir.Value, ir.Value]:
        """``x [B, N, C]`` and the token sizes ``[B, N, 1]`` after the planned merges:
        ``[B, N - r, C]`` and ``[B, N - r, 1]``. ``rows``: the batch index ``[B, r, 1]``
        (:meth:`batch_rows`).

        A B token ``t`` that takes in A tokens ``i`` becomes the size-weighted mean
        ``t + sum_i (s_i / S_t) (x_i - t)`` with ``S_t = s_t + sum_i s_i``: equal to ToMe's
        ``sum(s x) / sum(s)``, but only the ``r`` merged rows are weighed, so the stream is
        read and written twice (the gather of the kept tokens, the add into them), not six
        times as with ``x * s`` and ``s`` packed, merged and divided."""
        b = self.b
        index = b.op("Concat", [rows, plan.slot], {"axis": -1})

        def add_into(values: ir.Value, updates: ir.Value) -> ir.Value:
            return b.op("ScatterND", [values, index, updates], {"reduction": "add"})

        merged_size = self._gather(size, plan.merged)
        total = add_into(self._gather(size, plan.kept), merged_size)
        weight = b.op("Div", [merged_size, self._gather(total, plan.slot)])
        pull = b.op("Sub", [self._gather(x, plan.merged), self._gather(x, plan.target)])
        return add_into(self._gather(x, plan.kept), b.op("Mul", [pull, weight])), total

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
        return self._gather(x, self._without(self._column(gone), n, r, bipartite=False))
