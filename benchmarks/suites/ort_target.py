"""``ort_target``: the ``ort-cpu`` target against ONNX Runtime's own quantizers, side by
side: fp32, ``dynamic`` (``quantize_dynamic``), ``qdq-u8s8`` and ``qop-u8s8``
(``quantize_static``, QDQ and QOperator) from the cache the ``quant`` suite shares, and
onnxpress built from the same fp32 file and calibration batches:

- ``onnxpress-qdq``: the int8 pipeline left in QDQ form;
- ``onnxpress-ort-cpu``: ``--target ort-cpu --passes int8`` (lowered to integer operators
  by ``form=auto``'s rule; the notes say so);
- ``onnxpress-ort-cpu+ortx``: the same with ORT's transformer optimizer (``ort-transformers``)
  first.

Timing and quality as :mod:`benchmarks.core.side_by_side` says (default 20 rounds).

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.run --suite ort_target [--repeats 20]
"""

from __future__ import annotations

from ..core import side_by_side
from ..core.suite import Context, Row, Suite
from ..core.variants import BUILT_IN, Variant, pipeline

OURS = {
    "onnxpress-qdq": ("cleanup,fuse-for-ort(attention_bias=false),quantize(smooth=0.5),"
                      "fold-qdq", None),
    "onnxpress-ort-cpu": ("int8", "ort-cpu"),
    "onnxpress-ort-cpu+ortx": ("cleanup,fuse-for-ort(attention_bias=false),ort-transformers,"
                               "quantize(smooth=0.5),fold-qdq,lower-qdq(form=auto,fold=false)",
                               None),
}
BUILDERS = {**BUILT_IN, **{name: Variant(pipeline(passes, target), producer="onnxpress")
                           for name, (passes, target) in OURS.items()}}
VARIANTS = ("fp32", "dynamic", "qdq-u8s8", "qop-u8s8", *OURS)


def measure(ctx: Context) -> list[Row]:
    return side_by_side.measure(ctx, BUILDERS, VARIANTS)


SUITE = Suite("ort_target", __doc__, models=("minilm", "deit_small"),
              smoke_models=("digits_vit",), measure=measure, tables=side_by_side.tables,
              variants=VARIANTS, repeats=20)
