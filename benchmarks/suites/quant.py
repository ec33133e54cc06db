"""``quant``: int8 post-training quantization, side by side, on the baseline suite's models:
fp32, ONNX Runtime's ``dynamic``, ``qdq-u8s8``, ``qdq-s8s8`` and ``qop-u8s8`` (QOperator),
NVIDIA ModelOpt (``modelopt-int8``), Intel's onnx-neural-compressor (``inc-int8``) and
onnxpress's int8 preset (``onnxpress-int8``), all on the same calibration batches (see
:mod:`benchmarks.core.variants` and :mod:`benchmarks.core.peers` for how each is set up).

Measured as the baseline suite measures (:mod:`benchmarks.core.matrix`); the table shows
each variant's speed-up over fp32 at batch 1 and 8, size as % of fp32 and quality. A peer
that is not installed (``pip install -e .[peers]``) is ``unavailable`` with the reason; one
that fails on a model leaves its error in the cell. The exports and the ORT and peer files
are shared with the other suites through the cache.

    python -m benchmarks.run --suite quant [--models resnet18,digits_cnn] [--seconds S]
"""

from __future__ import annotations

from onnxpress.models.zoo import ZOO

from ..core import matrix
from ..core.matrix_report import plot, quant_tables
from ..core.peers import VARIANTS as BUILDERS
from ..core.subjects import DIGITS
from ..core.suite import Context, Row, Suite

VARIANTS = ("fp32", "dynamic", "qdq-u8s8", "qdq-s8s8", "qop-u8s8", "modelopt-int8",
            "inc-int8", "onnxpress-int8")


def measure(ctx: Context) -> list[Row]:
    return matrix.measure(ctx, BUILDERS, VARIANTS)


SUITE = Suite("quant", __doc__, models=(*ZOO, *DIGITS), smoke_models=("digits_cnn",),
              measure=measure, tables=quant_tables, variants=VARIANTS, plot=plot)
