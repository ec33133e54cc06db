"""``ort-transformers``: ONNX Runtime's own transformer fusions
(``onnxruntime.transformers.optimizer``: Attention, SkipLayerNormalization,
EmbedLayerNormalization, BiasGelu, ...) as a pass, for models where they find more than
``fuse-for-ort`` does. Off by default in every preset: on this project's models
``fuse-for-ort`` fuses the attention of both exporters where ORT's fusions find none in the
dynamo exports, and ORT 1.31's SkipLayerNormalization kernel on CPU is slower than the Add +
LayerNormalization it replaces (see ``fuse-for-ort``); run ``benchmarks/ort_target.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import onnx_ir as ir

from onnxpress.backends.ort_optimize import transformer_fusions
from onnxpress.passes.base import Pass, PassStats


@dataclasses.dataclass(frozen=True)
class OrtTransformers(Pass):
    name = "ort-transformers"

    # auto: bert for token-id inputs, else vit
    model_type: Literal["auto", "bert", "vit", "clip", "gpt2", "t5", "bart"] = "auto"
    num_heads: int = 0  # 0: detected by ORT
    hidden_size: int = 0  # 0: detected by ORT

    def call(self, model: ir.Model) -> PassStats:
        kind = self.model_type
        if kind == "auto":
            ints = any(v.dtype in (ir.DataType.INT64, ir.DataType.INT32)
                       for v in model.graph.inputs)
            kind = "bert" if ints else "vit"
        fused, counts = transformer_fusions(model, model_type=kind, num_heads=self.num_heads,
                                            hidden_size=self.hidden_size)
        result = PassStats(model, modified=bool(counts), stats=dict(counts, model_type=kind))
        if counts:
            model.graph = fused.graph
            for domain in {n.domain for n in model.graph.all_nodes()} - {"", "ai.onnx"}:
                model.opset_imports.setdefault(domain, 1)  # ORT's optimizer leaves them out
        else:
            result.notes.append(f"ort-transformers: ORT's {kind} fusions found nothing to fuse")
        return result
