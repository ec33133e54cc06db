"""``baseline``: the models as exported and as ONNX Runtime's own optimizer and quantizers
leave them - the numbers onnxpress's passes must beat.

Every zoo model and the two digits models, each as ``fp32``, ``ort-opt``, ``dynamic``,
``qdq-u8s8`` and ``qdq-s8s8`` (see :mod:`benchmarks.core.variants`), run the same way, so
that the comparison is what a user gets: ORT_ENABLE_ALL, ``--threads`` intra-op threads.
``fp32`` thus already includes ORT's online optimizations, and ``ort-opt`` is the offline
file optimized once more when its session loads it.

Per model x variant (:mod:`benchmarks.core.matrix`): latency at batch 1 (median, p10, p90
ms) and throughput at batch 8, interleaved; file size (MB = 2**20 bytes); peak memory (the
RSS high-water mark of a fresh process that creates the session and runs one batch of 8)
and its session load time; quality: the digits models' test accuracy and MiniLM's
``minilm-texts`` metric, and for every model top-1 agreement and mean cosine of the first
output against fp32 on 32 inputs (the random-weight zoo models' only quality). The plot
shows latency against quality.

    python -m benchmarks.run --suite baseline [--models resnet18,digits_cnn]
        [--variants fp32,dynamic] [--repeats N | --seconds S] [--threads 2] [--fresh]
"""

from __future__ import annotations

from onnxpress.models.zoo import ZOO

from ..core import matrix
from ..core.matrix_report import baseline_tables, plot
from ..core.subjects import DIGITS
from ..core.suite import Context, Row, Suite
from ..core.variants import BUILT_IN

VARIANTS = ("fp32", "ort-opt", "dynamic", "qdq-u8s8", "qdq-s8s8")


def measure(ctx: Context) -> list[Row]:
    return matrix.measure(ctx, BUILT_IN, VARIANTS)


SUITE = Suite("baseline", __doc__, models=(*ZOO, *DIGITS), smoke_models=("digits_cnn",),
              measure=measure, tables=baseline_tables, variants=VARIANTS, plot=plot)
