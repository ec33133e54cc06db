"""``int8_cost``: the measurements behind ``quantize``'s cost rule. Each model is a chain
of 1 or 4 Convs (each with its Relu) or one MatMul with a constant weight, at batch 1; its
fp32 compile (``cleanup``) and its int8 compile with the cost rule off (every layer
quantized, then ``fold-qdq`` and ``lower-qdq(form=auto)`` as the ``int8`` preset does) are
timed interleaved, and a row says whether int8 paid (speed-up > 1) and how many layers the
``int8`` preset, its cost rule on, quantizes (the last Conv of a chain, whose output is the
graph's, cannot run in int8 and never pays). A Conv chain's rows
give the saving of each further Conv (its marginal speed-up) apart from the cost of
entering and leaving int8 (``passes/quantize/static/cost.py`` takes its rates from them);
MatMuls with fewer than ``quantize(min_rows=...)`` rows per sample (a vector product) do
not pay.

    python -m benchmarks.run --suite int8_cost --repeats 40

``--smoke``: one Conv and one MatMul, one round.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.bench import bench_models

from ..core.suite import Context, Row, Suite, log, row
from ..core.tables import table

#: name -> ("conv", channels, kernel, size, groups, depth) or ("matmul", m, k, n)
LAYERS: dict[str, tuple] = {
    **{f"conv{k}x{k}_{c}_{hw}{'_dw' if g > 1 else ''}_x{depth}": ("conv", c, k, hw, g, depth)
       for c, k, hw, g in ((32, 3, 56, 1), (64, 3, 28, 1), (256, 3, 14, 1), (128, 1, 28, 1),
                           (512, 1, 7, 1), (144, 3, 14, 144))
       for depth in (1, 4)},
    "matmul_1x128x128": ("matmul", 1, 128, 128),
    "matmul_1x256x256": ("matmul", 1, 256, 256),
    "matmul_1x512x512": ("matmul", 1, 512, 512),
    "matmul_16x256x256": ("matmul", 16, 256, 256),
    "matmul_128x384x384": ("matmul", 128, 384, 384),
    "matmul_128x384x1536": ("matmul", 128, 384, 1536),
}
INT8 = ("cleanup,quantize(cost=false,grouped=true,min_rows=0),fold-qdq,"
        "lower-qdq(form=auto,fold=false)")
SAMPLES = 4


def layer_model(spec: tuple) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """The one-layer model and calibration samples of ``spec``, from a fixed seed."""
    rng = np.random.default_rng(0)
    inits = []
    if spec[0] == "conv":
        _, c, k, size, groups, depth = spec
        nodes, x = [], "x"
        for i in range(depth):
            scale = 1.5 / np.sqrt(c // groups * k * k)  # activations keep their size
            weight = rng.standard_normal((c, c // groups, k, k)) * scale
            inits.append(numpy_helper.from_array(weight.astype(np.float32), f"w{i}"))
            nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[k // 2] * 4,
                                       group=groups),
                      helper.make_node("Relu", [f"c{i}"], ["y" if i == depth - 1 else f"r{i}"])]
            x = f"r{i}"
        shape = (1, c, size, size)
    else:
        _, m, k, n = spec
        inits.append(numpy_helper.from_array(
            rng.standard_normal((k, n)).astype(np.float32) * 0.05, "w0"))
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["y"])]
        shape = (1, m, k)
    graph = helper.make_graph(nodes, "layer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(SAMPLES)]
    return model, data


def measure(ctx: Context) -> list[Row]:
    rows = []
    for name in ctx.models:
        spec = LAYERS[name]
        model, data = layer_model(spec)
        fp32 = onnxpress.compile(model, "cleanup")
        int8 = onnxpress.compile(model, INT8, calibration=data)
        _, report = onnxpress.compile(model, "int8", calibration=data, return_report=True)
        chosen = next(p for p in report.passes if p.name == "quantize").stats["nodes"]
        timed = bench_models([("fp32", fp32), ("int8", int8)], repeats=ctx.repeats,
                             warmup=3, threads=ctx.threads, progress=False)
        speedup = timed[0].median_ms / timed[1].median_ms
        weight = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
        log(f"{name}: fp32 {timed[0].median_ms:.3f} ms, int8 {timed[1].median_ms:.3f} ms, "
            f"{speedup:.2f}x")
        kind = spec[0] if spec[0] == "matmul" else (
            f"{'depthwise ' if spec[4] > 1 else ''}conv x{spec[5]}")
        rows.append(row(name, "int8", kind=kind, weight=weight,
                        fp32_ms=round(timed[0].median_ms, 4),
                        int8_ms=round(timed[1].median_ms, 4),
                        speedup=round(speedup, 3), pays=speedup > 1.0,
                        preset_layers=chosen, layers=len(model.graph.initializer)))
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        return (r["kind"], str(r["weight"]), f"{r['fp32_ms']:.3f}", f"{r['int8_ms']:.3f}",
                f"{r['speedup']:.2f}x", "yes" if r["pays"] else "no",
                f"{r['preset_layers']} of {r['layers']}")

    header = ("layer", "kind", "weight elements", "fp32 ms", "int8 ms", "speed-up", "pays",
              "int8 preset quantizes")
    return {"int8 against fp32, one layer at batch 1": table(header, rows, cells,
                                                             names=("model",))}


SUITE = Suite("int8_cost", __doc__, models=tuple(LAYERS),
              smoke_models=("conv1x1_128_28_x1", "matmul_1x256x256"), measure=measure,
              tables=tables, repeats=30)
