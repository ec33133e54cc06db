"""Running third-party passes (onnx_ir's, onnxscript's) with an honest ``modified`` flag.

Some of them report a change when they only refreshed shape information; the cleanup
fixed point needs to know whether the graph's structure moved, so we compare fingerprints.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir
from onnxscript.rewriter import RewritePass, RewriteRuleSet

from onnxpress.ir.analysis import count_nodes
from onnxpress.passes.base import PassStats, structure_signature


def run_wrapped(model: ir.Model, passes: Iterable[ir.passes.PassBase]) -> PassStats:
    before_nodes = count_nodes(model)
    before = structure_signature(model)
    for inner in passes:
        inner(model)
    after_nodes = count_nodes(model)
    return PassStats(
        model,
        modified=structure_signature(model) != before,
        stats={"nodes_removed": before_nodes - after_nodes},
    )


def rewrite_pass(rules: RewriteRuleSet) -> ir.passes.PassBase:
    return RewritePass(rules)
