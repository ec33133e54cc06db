"""``quant_headline``: issue 4's headline numbers at the issue's settings: ViT-S/16
(``deit_small``) at 224 px, ResNet-50, all-MiniLM-L6-v2 on real sentences padded to 128
tokens; fp32 against ONNX Runtime's quantizers (``dynamic``, ``qdq-u8s8``, ``qop-u8s8``),
the peers that are installed (``modelopt-int8``, ``inc-int8``) and onnxpress's int8 preset.

Variant files come from the cache the ``quant`` suite fills (built here when missing);
timing and quality as :mod:`benchmarks.core.side_by_side` says (default 15 rounds).

    python -m benchmarks.run --suite quant_headline [--repeats 30]
"""

from __future__ import annotations

from ..core import side_by_side
from ..core.peers import VARIANTS as BUILDERS
from ..core.suite import Context, Row, Suite

VARIANTS = ("fp32", "dynamic", "qdq-u8s8", "qop-u8s8", "modelopt-int8", "inc-int8",
            "onnxpress-int8")


def measure(ctx: Context) -> list[Row]:
    return side_by_side.measure(ctx, BUILDERS, VARIANTS)


SUITE = Suite("quant_headline", __doc__, models=("deit_small", "resnet50", "minilm"),
              smoke_models=("digits_cnn", "digits_vit"), measure=measure,
              tables=side_by_side.tables, variants=VARIANTS, repeats=15)
