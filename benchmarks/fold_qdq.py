"""``fold-qdq`` on ResNet-18 as other tools quantize it: file size, ONNX Runtime latency and
bit identity, before and after the pass.

    python benchmarks/fold_qdq.py [--repeats 10] [--threads 2]
        [--cache-dir benchmarks/results/fold_qdq] [--out benchmarks/results/fold_qdq.json]

Inputs (the zoo's seeded ResNet-18, dynamo export, built once into ``--cache-dir``):

- ``ort-qdq-u8s8-pc``: ``quantize_static``, QDQ, U8S8 per channel, ``AddQDQPairToWeight``
  (float weights behind Q -> DQ, what fold-qdq folds to int8);
- ``ort-qdq-default``: ``quantize_static``, QDQ, its defaults (in ORT 1.31: S8S8 per tensor,
  int8 weights already);
  both on ``quant_pre_process``'s output, as ORT recommends;
- ``qat-torchscript`` / ``qat-dynamo``: FX-mode QAT (``prepare_qat_fx``, the x86 non-fused
  FakeQuantize qconfig: uint8 activations in (0, 127), per-channel int8 weights), observers
  run on seeded batches, exported by TorchScript, and by torch.export with each FakeQuantize
  called as the ``fake_quantize_per_*_affine`` it computes (torch.export cannot trace its
  branches on buffers).

Each input goes through ``fold-qdq``; ``ort-qdq-default`` also through
``fold-qdq(int8_moves=true)``, and ``qat-dynamo`` through ``cleanup,fold-qdq``
(torch.export leaves the BN-scaled QAT weights as Mul nodes, constants only once folded).
ORT's calibration and the QAT observers see 8 seeded normal images. Latency: ONNX Runtime
CPU at its default level (ORT_ENABLE_ALL), ``--threads`` intra-op threads, before and after
interleaved round by round (``onnxpress.backends.bench.bench_models``), median of
``--repeats`` rounds at batch 1 and 8. ``bit-identical``: every output equal
(``np.array_equal``) on 8 seeded images, with ORT's optimisations off, and at the default
level (``*``: the input does not load there; compared with it at ORT_ENABLE_BASIC). ``ORT
graph``: which op counts differ between the graphs ORT runs at its default level (``same``:
any latency difference is noise). Sizes count external data files. On a small shared
machine ``--threads 1 --repeats 30`` gives the steadier medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from baseline_variants import Calibration, _Reader, preprocessed

import onnxpress
from onnxpress.backends.bench import bench_models
from onnxpress.errors import BadInputError

HERE = Path(__file__).resolve().parent
INPUT = "pixel_values"
#: (input, pipeline): fold-qdq on each; also int8_moves=true where activations are int8;
#: cleanup first where torch.export left the BN-scaled QAT weights as Mul nodes
ROWS = [("ort-qdq-u8s8-pc", "fold-qdq"), ("ort-qdq-default", "fold-qdq"),
        ("ort-qdq-default", "fold-qdq(int8_moves=true)"),
        ("qat-torchscript", "fold-qdq"), ("qat-dynamo", "fold-qdq"),
        ("qat-dynamo", "cleanup,fold-qdq")]


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 224, 224)).astype(np.float32)


def ort_qdq(fp32: Path, out: Path, *, u8s8_per_channel: bool) -> None:
    """On ``quant_pre_process``'s output, as ONNX Runtime recommends (its BN folding lets
    the Convs fuse to QLinearConv); U8S8 per channel with float weights, or the defaults."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = [{INPUT: images(8, 1)[i:i + 4]} for i in (0, 4)]
    options = ({"per_channel": True, "activation_type": QuantType.QUInt8,
                "extra_options": {"AddQDQPairToWeight": True}} if u8s8_per_channel else {})
    quantize_static(preprocessed(fp32), str(out),
                    _Reader(Calibration(batches, "seeded normal")),
                    quant_format=QuantFormat.QDQ, **options)


def qat_model():
    """The zoo ResNet-18 through FX-mode QAT, observers run, then frozen (eval)."""
    import torch
    from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    from onnxpress.models.zoo import ZOO

    example = (torch.from_numpy(images(2, 1)),)
    qat = prepare_qat_fx(ZOO["resnet18"].build().train(),
                         get_default_qat_qconfig_mapping("x86", version=0), example)
    with torch.no_grad():
        for start in (0, 4):
            qat(torch.from_numpy(images(8, 1)[start:start + 4]))
    qat.apply(disable_observer)
    return qat.eval(), example


def _traceable_fake_quant(self, x):
    """``FakeQuantize.forward`` with its observer off and fake-quant on, as plain calls."""
    import torch

    if self.is_per_channel:
        return torch.fake_quantize_per_channel_affine(
            x, self.scale, self.zero_point.int(), self.ch_axis, self.quant_min, self.quant_max)
    return torch.fake_quantize_per_tensor_affine(x, *self.frozen_qparams, self.quant_min,
                                                 self.quant_max)


def qat_export(out: Path, *, dynamo: bool) -> None:
    import torch
    from torch.ao.quantization import FakeQuantize

    model, example = qat_model()
    if not dynamo:
        torch.onnx.export(model, example, str(out), dynamo=False, opset_version=17,
                          input_names=[INPUT], output_names=["logits"],
                          dynamic_axes={INPUT: {0: "batch"}})
        return
    for module in model.modules():
        if isinstance(module, FakeQuantize) and not module.is_per_channel:
            module.frozen_qparams = (float(module.scale), int(module.zero_point))
    # torch.export has no symbolic-shape kernel for fake-quant: batch 1 and 8 are two files
    with mock.patch.object(FakeQuantize, "forward", _traceable_fake_quant):
        for batch in (1, 8):
            torch.onnx.export(model, (torch.from_numpy(images(batch, 1)),),
                              str(out.with_suffix(f".b{batch}.onnx")), dynamo=True,
                              opset_version=18, input_names=[INPUT], output_names=["logits"])


def prepare(cache: Path) -> dict[str, dict[int, Path]]:
    """Each input's file per batch size (one file for every batch where the batch is dynamic)."""
    cache.mkdir(parents=True, exist_ok=True)
    fp32 = cache / "resnet18.onnx"
    if not fp32.is_file():
        from onnxpress.models.zoo import ZOO

        ZOO["resnet18"].export(fp32)
    builders = {
        "ort-qdq-u8s8-pc": lambda out: ort_qdq(fp32, out, u8s8_per_channel=True),
        "ort-qdq-default": lambda out: ort_qdq(fp32, out, u8s8_per_channel=False),
        "qat-torchscript": lambda out: qat_export(out, dynamo=False),
        "qat-dynamo": lambda out: qat_export(out, dynamo=True),
    }
    files = {}
    for name, build in builders.items():
        out = cache / f"{name}.onnx"
        per_batch = {b: out.with_suffix(f".b{b}.onnx") for b in (1, 8)}
        if not (out.is_file() or all(p.is_file() for p in per_batch.values())):
            started = time.perf_counter()
            build(out)
            print(f"built {name} in {time.perf_counter() - started:.0f} s")
        files[name] = {b: out for b in (1, 8)} if out.is_file() else per_batch
    return files


def fold(source: Path, passes: str) -> tuple[Path, dict[str, int]]:
    """``passes`` over ``source`` (verify() after each), saved with every weight inside the
    file (the writer would otherwise keep pointing at the input's external data file)."""
    target = source.with_name(f"{source.stem}.{passes.replace(',', '+')}.onnx")
    model, report = onnxpress.compile(source, passes, return_report=True)
    ir.external_data.load_to_model(model)
    onnxpress.save(model, target)
    onnx.checker.check_model(str(target), full_check=True)
    return target, {k: v for record in report.passes for k, v in record.stats.items() if v}


def file_size(path: Path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    names = {e.value for t in proto.graph.initializer for e in t.external_data
             if e.key == "location"}
    return path.stat().st_size + sum((path.parent / n).stat().st_size for n in names)


def outputs(path: Path, level: ort.GraphOptimizationLevel, feed: np.ndarray):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own classes for every load failure
        return str(error).splitlines()[0]
    return session.run(None, {INPUT: feed})


def identical(before: Path, after: Path, feed: np.ndarray) -> dict[str, str]:
    """``yes``/``NO`` with ORT's optimisations off, and at its default level; where the input
    does not load at the default level, against the input at ORT_ENABLE_BASIC (``yes*``)."""
    level = ort.GraphOptimizationLevel
    verdicts = {}
    for label, optimised in (("unoptimised", level.ORT_DISABLE_ALL),
                             ("default", level.ORT_ENABLE_ALL)):
        a, b = outputs(before, optimised, feed), outputs(after, optimised, feed)
        mark = ""
        if isinstance(a, str) and label == "default":
            print(f"  the input does not load at ORT_ENABLE_ALL: {a}")
            a, mark = outputs(before, level.ORT_ENABLE_BASIC, feed), "*"
        if isinstance(a, str) or isinstance(b, str):
            verdicts[label] = "-"
            continue
        same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        verdicts[label] = ("yes" if same else "NO") + mark
    return verdicts


def ort_graph(path: Path) -> collections.Counter[str] | None:
    """The op types of the graph ONNX Runtime runs at its default level; None if it does not
    load."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "ort.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:  # ORT raises its own classes for every load failure
            return None
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return collections.Counter(node.op_type for node in graph.node)


def graph_change(before: Path, after: Path) -> str:
    """How the graph ORT runs changed: ``same`` (then latency can only differ by noise),
    else the op counts that differ."""
    a, b = ort_graph(before), ort_graph(after)
    if a is None or b is None:
        return "-"
    changed = [f"{op} {a[op]}->{b[op]}" for op in sorted(set(a) | set(b)) if a[op] != b[op]]
    return ", ".join(changed) or "same"


def latency(before: Path, after: Path, batch: int, args) -> list[float | None]:
    feeds = {INPUT: images(batch, 2)}
    try:
        rows = bench_models([("before", before), ("after", after)], threads=args.threads,
                            batch=batch, repeats=args.repeats, feeds=feeds, progress=False)
        return [row.median_ms for row in rows]
    except BadInputError:  # the input does not load at the default level
        (row,) = bench_models([("after", after)], threads=args.threads, batch=batch,
                              repeats=args.repeats, feeds=feeds, progress=False)
        return [None, row.median_ms]


def measure(name: str, passes: str, files: dict[int, Path], args) -> dict:
    folded = {path: fold(path, passes) for path in set(files.values())}
    source = files[8]
    target, stats = folded[source]
    print(f"{name} | {passes}: {stats}")
    row = {"input": name, "passes": passes, "stats": stats, "size_before": file_size(source),
           "size_after": file_size(target), "q_before": _count(source, "QuantizeLinear"),
           "q_after": _count(target, "QuantizeLinear"),
           "identical": identical(source, target, images(8, 3)),
           "ort_graph": graph_change(source, target)}
    for batch, path in files.items():
        row[f"ms_b{batch}"] = latency(path, folded[path][0], batch, args)
    return row


def _count(path: Path, op: str) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type == op for node in graph.node)


def _ms(value: float | None) -> str:
    return "no load" if value is None else f"{value:.2f}"


def print_table(rows: list[dict]) -> None:
    print(f"\n{'input':16} {'passes':29} {'size MB before->after':>22} {'Q nodes':>10} "
          f"{'b1 ms before->after':>20} {'b8 ms before->after':>20} {'bit-identical':>14}  "
          "ORT graph")
    for r in rows:
        size = f"{r['size_before'] / 2**20:.2f} -> {r['size_after'] / 2**20:.2f}"
        q = f"{r['q_before']} -> {r['q_after']}"
        b1 = " -> ".join(_ms(v) for v in r["ms_b1"])
        b8 = " -> ".join(_ms(v) for v in r["ms_b8"])
        same = "/".join(r["identical"].values())
        print(f"{r['input']:16} {r['passes']:29} {size:>22} {q:>10} {b1:>20} {b8:>20} "
              f"{same:>14}  {r['ort_graph']}")
    print("bit-identical: unoptimised/default level; *: the input does not load at the "
          "default level, compared with it at ORT_ENABLE_BASIC. ORT graph: the op counts "
          "that differ in the graph ORT runs at its default level")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=HERE / "results" / "fold_qdq")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fold_qdq.json")
    args = parser.parse_args(argv)
    inputs = prepare(args.cache_dir)
    rows = [measure(name, passes, inputs[name], args) for name, passes in ROWS]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                                    "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
