"""Attention in exported graphs: tracing q, k, v to their projections (:mod:`.heads`),
reshape layouts (:mod:`.reshape`), additive masks (:mod:`.mask`), ONNX Runtime's fused
Attention read as heads (:mod:`.fused`)."""
