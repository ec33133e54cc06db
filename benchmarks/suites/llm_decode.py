"""``llm_decode``: SmolLM2-135M generating text on ONNX Runtime CPU, fp32 against onnxpress
pipelines and ONNX Runtime's own quantizers: size, perplexity, prefill latency, decode
tokens/s and peak memory, every variant side by side in one run (issue 23).

Every number comes from the KV-cache export (``smollm2_onnx(kv_cache=True)``, what a
generator runs) after the variant's pipeline:

- **prefill**: one call on a ``prompt``-token prompt (128; the first tokens of the
  ``smollm2-text`` evaluation text) with an empty past, batch 1, timed by
  :mod:`benchmarks.core.timing` (3 warm-up calls, then all variants interleaved round by
  round, median and p10/p90);
- **decode**: greedy generation of ``new_tokens`` (32) after that prompt, feeding each
  call's ``present_*`` back as ``past_*``; only the decode steps are timed, one generation
  per variant per round, interleaved, the median round
  (:func:`benchmarks.core.decode.time_decode`). "greedy = fp32" counts the leading
  generated tokens (the prefill's and one per step) that are fp32's;
- **perplexity** of the ``smollm2-text`` windows (58 x 128 tokens, ``--set windows=N`` for
  the first N) through :func:`onnxpress.evaluation.evaluate`, fed with an empty past: the
  same file as the timings (fp32: 42.09);
- **peak RSS**: a fresh child process (:mod:`benchmarks.core.child`) that imports ONNX
  Runtime, loads the variant and runs the prefill and the decode once; imports included
  (the RSS before loading is in the JSON);
- **size**: the model file and its external data.

``--set plain=true`` also compiles the no-cache export with each pipeline (the peers
quantize it too) and reports its perplexity and prefill latency beside the cache export's:
the two exports of one variant should agree.

Variants (``VARIANTS``; ``--set pipelines="P1;P2"`` adds onnxpress pipelines, each named by
its string; ``--variants`` picks among the named ones, fp32 always runs):
- onnxpress: ``fp32`` (the export), ``cleanup``, ``cleanup+fuse-for-ort`` (with
  GroupQueryAttention on the cache export), ``int4-b32`` / ``int4-b128`` (``weight-only``
  int4 ``MatMulNBits`` with its defaults: the activation-aware method on the calibration
  windows, the tied embedding / LM head once at 8 bits, 4-bit layers on float activations),
  the same with ``accuracy_level=4`` (int8 activations inside MatMulNBits, like the RTN
  peers), ``gqa+int4-b128-acc4`` (both), ``int8`` (the preset: smooth,
  static QDQ, lowered; calibrated on ``smollm2_calibration.npz``, 20 windows, disjoint from
  the scored text);
- ONNX Runtime's ``MatMulNBitsQuantizer`` (``PEERS``): ``ort-rtn-b32`` / ``-b128``
  (``RTNWeightOnlyQuantConfig``, symmetric like onnxpress's int4, ``accuracy_level=4``),
  ``ort-hqq-b32`` / ``-b128`` (``HQQWeightOnlyQuantConfig``, asymmetric with float zero
  points as HQQ is; it sets no ``accuracy_level``, so float activations; it needs torch);
  ``ort-dynamic-int8``: ``quantize_dynamic``, int8 per-channel weights of every MatMul.
  They start from ``quant_pre_process``'s output (without its symbolic shape inference,
  which fails on these exports): ONNX Runtime's constant folding turns the exporter's
  ``Transpose(weight)`` into a constant, else they would quantize nothing. They run in a
  child process and their files are cached (keyed by the export and the tools' versions).

    python -m benchmarks.run --suite llm_decode [--repeats 5] [--set new_tokens=64]
        [--set windows=16] [--set plain=true] [--set "pipelines=cleanup,int8"]

``--smoke``: a tiny random LLaMA of two layers (exported in a child, cached), a 16-token
prompt, 8 new tokens, 8 random windows of 16 tokens, a few variants, one round.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cache import version_tag
from ..core.child import run_child
from ..core.decode import (
    generate_once,
    kv_inputs,
    prefill_feeds,
    same_prefix,
    time_decode,
    with_empty_past,
)
from ..core.subjects import Batch, Subject
from ..core.suite import Context, Row, Suite, Unavailable, log, ok, row, step
from ..core.tables import num, ratio, table
from ..core.timing import time_variants
from ..core.variants import preprocessed

#: name -> onnxpress pipeline ("": the export as it is)
VARIANTS = {
    "fp32": "",
    "cleanup": "cleanup",
    "cleanup+fuse-for-ort": "cleanup,fuse-for-ort(group_query_attention_past=true)",
    "int4-b32": "weight-only(bits=4,format=matmulnbits,block_size=32)",
    "int4-b128": "weight-only(bits=4,format=matmulnbits,block_size=128)",
    "int4-b32-acc4": "weight-only(bits=4,format=matmulnbits,block_size=32,accuracy_level=4)",
    "int4-b128-acc4": "weight-only(bits=4,format=matmulnbits,block_size=128,accuracy_level=4)",
    "gqa+int4-b128-acc4": ("cleanup,fuse-for-ort(group_query_attention_past=true),"
                           "weight-only(bits=4,format=matmulnbits,block_size=128,"
                           "accuracy_level=4)"),
    "int8": "int8",
}
#: name -> (ONNX Runtime quantizer, block size)
PEERS = {
    "ort-rtn-b32": ("rtn", 32),
    "ort-rtn-b128": ("rtn", 128),
    "ort-hqq-b32": ("hqq", 32),
    "ort-hqq-b128": ("hqq", 128),
    "ort-dynamic-int8": ("dynamic", 0),
}
#: MatMulNBits accuracy_level of the RTN peers: int8 activations (HQQ's quantizer sets none)
RTN_ACCURACY_LEVEL = 4
PRODUCERS = {
    "rtn": f"ORT MatMulNBitsQuantizer RTN, symmetric, accuracy_level={RTN_ACCURACY_LEVEL}",
    "hqq": "ORT MatMulNBitsQuantizer HQQ (asymmetric, no accuracy_level)",
    "dynamic": "ORT quantize_dynamic, int8 per-channel MatMul weights",
}
CALIBRATION_BATCH = 4
PEER_TIMEOUT_S = 3600
TINY = "tiny-llama"


@dataclasses.dataclass(frozen=True)
class Llm:
    """A model's exports and the token ids it is measured on."""

    name: str
    exports: dict[str, Path]  # "kv" always; "plain" (no cache) with --set plain=true
    prompt: np.ndarray  # [prompt] token ids
    text: np.ndarray  # [windows, S] token ids scored by perplexity
    targets: np.ndarray  # [windows, S] the next token (-1: none)
    calibration: list[Batch]  # input_ids + attention_mask batches
    kv: dict[str, tuple[int, int]]  # the cache export's past_* inputs: (kv_heads, head_dim)

    def calibration_for(self, export: str) -> list[Batch]:
        if export != "kv":
            return self.calibration
        return [with_empty_past(batch, self.kv) for batch in self.calibration]


def measure(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in ctx.models:
        llm = _llm(model, ctx)
        found = {name: _built(llm, name, spec, ctx) for name, spec in _wanted(ctx).items()}
        for r in ok(list(found.values())):
            with step(r, "perplexity"):
                _perplexity(llm, r)
            if r["status"] == "ok":
                with step(r, "generate in a child"):
                    _memory(llm, r, ctx)
                    log(f"{model} {r['variant']}: perplexity {r['perplexity']:.2f}, "
                        f"peak RSS {r['peak_rss_mb']:.0f} MB")
        _timed(llm, found, ctx)
        _ratios(found)
        rows += found.values()
    return rows


def _wanted(ctx: Context) -> dict[str, str]:
    """name -> pipeline (a peer's: its name) of the variants this run builds."""
    named = {**VARIANTS, **{name: name for name in PEERS}}
    chosen = {n: s for n, s in named.items() if n == "fp32" or ctx.wants(n)}
    extra = [s.strip() for s in ctx.options["pipelines"].split(";") if s.strip()]
    return {**chosen, **{spec: spec for spec in extra}}


# --- the models and their data -------------------------------------------------------

def _llm(model: str, ctx: Context) -> Llm:
    plain = bool(ctx.options["plain"])
    if model == TINY:
        return _tiny(ctx, plain)
    from onnxpress.models.build_llm_texts import CALIBRATION_NPZ
    from onnxpress.models.datasets import load_dataset

    exports = run_child(smollm2_exports, timeout=3600, plain=plain)["value"]
    text = load_dataset("smollm2-text")
    windows = ctx.options["windows"] or len(text)
    with np.load(CALIBRATION_NPZ) as arrays:
        calibration = {k: arrays[k] for k in ("input_ids", "attention_mask")}
    prompt = text.inputs["input_ids"].reshape(-1)[: ctx.options["prompt"]]
    return Llm(model, {k: Path(v) for k, v in exports.items()}, prompt,
               text.inputs["input_ids"][:windows], text.targets[:windows],
               _batched(calibration), kv_inputs(exports["kv"]))


def _tiny(ctx: Context, plain: bool) -> Llm:
    from onnxpress.models.build_llm_texts import next_tokens

    exports = {}
    for export in ("kv", "plain") if plain else ("kv",):
        exports[export] = ctx.cache.file(
            (TINY, export, version_tag("torch", "transformers")),
            lambda path, e=export: run_child(export_tiny, target=str(path),
                                             kv_cache=e == "kv")["value"]).path
    rng = np.random.default_rng(0)
    vocab = 256
    text = rng.integers(0, vocab, (ctx.options["windows"] or 8, 16)).astype(np.int64)
    calibration = rng.integers(0, vocab, (8, 16)).astype(np.int64)
    prompt = rng.integers(0, vocab, ctx.options["prompt"]).astype(np.int64)
    return Llm(TINY, exports, prompt, text, next_tokens(text),
               _batched({"input_ids": calibration, "attention_mask": np.ones_like(calibration)}),
               kv_inputs(exports["kv"]))


def _batched(arrays: Batch) -> list[Batch]:
    count = len(arrays["input_ids"])
    return [{k: v[i : i + CALIBRATION_BATCH] for k, v in arrays.items()}
            for i in range(0, count, CALIBRATION_BATCH)]


# --- the variants ----------------------------------------------------------------------

def _built(llm: Llm, name: str, spec: str, ctx: Context) -> Row:
    """The variant of each export, its file and what built it."""
    r = row(llm.name, name, spec=spec if name not in PEERS else "-")
    for export in llm.exports:
        key = "" if export == "kv" else f"{export}_"
        with step(r, f"build ({export} export)"):
            path, meta = (_peer(llm, export, name, ctx) if name in PEERS
                          else _onnxpress(llm, export, name, spec, ctx))
            r.update({f"{key}path": str(path), f"{key}file_mb": _size_mb(path),
                      **({"producer": meta.pop("producer"), **meta} if not key else {})})
        if r["status"] != "ok":
            break
    if r["status"] == "ok":
        log(f"{llm.name} {name}: {r['file_mb']:.1f} MB ({r['producer']})")
    return r


def _onnxpress(llm: Llm, export: str, name: str, spec: str,
               ctx: Context) -> tuple[Path, dict[str, Any]]:
    import time

    import onnxpress

    source = llm.exports[export]
    if not spec:
        return source, {"producer": "the export"}
    started = time.perf_counter()
    model, report = onnxpress.compile(source, spec, calibration=llm.calibration_for(export),
                                      return_report=True, progress=False)
    path = ctx.folder(llm.name, export) / f"{_slug(name)}.onnx"
    onnxpress.save(model, path)
    stats = {p.name: p.stats for p in report.passes if p.stats and p.name != "cleanup"}
    return path, {"producer": "onnxpress", "stats": stats,
                  "build_s": round(time.perf_counter() - started, 1)}


def _peer(llm: Llm, export: str, name: str, ctx: Context) -> tuple[Path, dict[str, Any]]:
    kind, block = PEERS[name]
    if kind == "hqq" and importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed (ONNX Runtime's HQQ quantizer needs it)")
    source = llm.exports[export]
    subject = Subject(f"{llm.name}-{export}-{source.stem}", source, "text", [], {}, None, {})
    packages = ("onnxruntime", "torch") if kind == "hqq" else ("onnxruntime",)

    def build(path: Path) -> dict[str, Any]:
        pre, notes = preprocessed(subject, ctx)
        said = run_child(quantize_peer, timeout=PEER_TIMEOUT_S, kind=kind, block=block,
                         source=str(pre), out=str(path))
        return {"notes": notes, "ops": said["value"], "build_s": round(said["seconds"], 1)}

    entry = ctx.cache.file((subject.name, name, version_tag(*packages)), build)
    return entry.path, {"producer": PRODUCERS[kind], **entry.meta, "cached": entry.cached}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def _size_mb(path: Path) -> float:
    from onnxpress.frontends.external_data import model_files

    return sum(p.stat().st_size for p in model_files(path) if p.is_file()) / 2**20


# --- the measurements ------------------------------------------------------------------

def _perplexity(llm: Llm, r: Row) -> None:
    from onnxpress.evaluation import evaluate
    from onnxpress.models.datasets import Dataset

    arrays = {"input_ids": llm.text, "attention_mask": np.ones_like(llm.text)}
    for key in ("", *(f"{e}_" for e in llm.exports if e != "kv")):
        feeds = with_empty_past(arrays, llm.kv) if not key else arrays
        data = Dataset(f"{llm.name} text", feeds, None, {"targets": llm.targets})
        result = evaluate(r[f"{key}path"], data, progress=False)
        r[f"{key}perplexity"] = result.value
        r["scored_tokens"] = int(result.metrics["tokens"])


def _memory(llm: Llm, r: Row, ctx: Context) -> None:
    said = run_child(generate_once, timeout=1800, path=r["path"], prompt=llm.prompt.tolist(),
                     new_tokens=ctx.options["new_tokens"], threads=ctx.threads)
    r.update(peak_rss_mb=round(said["peak_rss_mb"], 1), child=said["value"])


def _timed(llm: Llm, found: dict[str, Row], ctx: Context) -> None:
    """Prefill of each export, then decode: every variant that got this far, interleaved."""
    alive = {name: r for name, r in found.items() if r["status"] == "ok"}
    if "fp32" not in alive:
        return
    for key in ("", *(f"{e}_" for e in llm.exports if e != "kv")):
        feeds = prefill_feeds(llm.prompt, llm.kv if not key else {})
        with step(alive["fp32"], f"{key}prefill timing"):
            timed = time_variants({n: r[f"{key}path"] for n, r in alive.items()}, feeds,
                                  batch=1, repeats=ctx.repeats, threads=ctx.threads)
            for name, t in timed.items():
                alive[name][f"{key}prefill"] = t
    log(f"{llm.name}: prefill timed; decoding {ctx.options['new_tokens']} tokens")
    with step(alive["fp32"], "decode timing"):
        decoded = time_decode({n: r["path"] for n, r in alive.items()}, llm.prompt,
                              new_tokens=ctx.options["new_tokens"], repeats=ctx.repeats,
                              threads=ctx.threads)
        reference = decoded["fp32"]["tokens"]
        for name, t in decoded.items():
            alive[name].update(decode=t, greedy_same=same_prefix(t["tokens"], reference),
                               greedy_of=len(reference))


def _ratios(found: dict[str, Row]) -> None:
    """Each variant against fp32 of the same run: perplexity and size (x fp32), prefill and
    decode speed (> 1: faster)."""
    base = found.get("fp32", {})
    for r in ok(list(found.values())):
        if base.get("perplexity") and "perplexity" in r:
            r["perplexity_ratio"] = r["perplexity"] / base["perplexity"]
        if base.get("file_mb"):
            r["size_ratio"] = r["file_mb"] / base["file_mb"]
        if "prefill" in base and "prefill" in r:
            r["prefill_x"] = base["prefill"]["median_ms"] / r["prefill"]["median_ms"]
        if "decode" in base and "decode" in r:
            r["decode_x"] = r["decode"]["tokens_per_s"] / base["decode"]["tokens_per_s"]


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        prefill, decode = r.get("prefill", {}), r.get("decode", {})
        greedy = f"{r['greedy_same']}/{r['greedy_of']}" if "greedy_same" in r else "-"
        return (f"{r['file_mb']:.1f}", num(r.get("perplexity")), ratio(r.get("perplexity_ratio")),
                num(prefill.get("median_ms"), ".1f"), ratio(r.get("prefill_x")),
                num(decode.get("tokens_per_s"), ".1f"), ratio(r.get("decode_x")), greedy,
                num(r.get("peak_rss_mb"), ".0f"))

    header = ("model", "variant", "size MB", "perplexity", "ppl x fp32", "prefill ms",
              "prefill x fp32", "decode tok/s", "decode x fp32", "greedy = fp32",
              "peak RSS MB")
    out = {"generation with a KV cache, batch 1 (ONNX Runtime CPU)": table(header, rows, cells)}
    if any("plain_path" in r for r in rows):
        def plain(r: Row) -> tuple[str, ...]:
            return (num(r.get("plain_file_mb"), ".1f"), num(r.get("plain_perplexity")),
                    num(r.get("perplexity")), num(r.get("plain_prefill", {}).get("median_ms"),
                                                  ".1f"),
                    num(r.get("prefill", {}).get("median_ms"), ".1f"))

        out["the no-cache export against the cache export"] = table(
            ("model", "variant", "no-cache MB", "no-cache ppl", "cache ppl",
             "no-cache prefill ms", "cache prefill ms"), rows, plain)
    return out


# --- run in a child process (see run_child) ----------------------------------------------

def smollm2_exports(plain: bool) -> dict[str, str]:
    """The SmolLM2 exports' paths (exported once into onnxpress's own cache; torch here)."""
    from onnxpress.models.smollm2 import smollm2_onnx

    paths = {"kv": str(smollm2_onnx(kv_cache=True))}
    if plain:
        paths["plain"] = str(smollm2_onnx(kv_cache=False))
    return paths


def export_tiny(target: str, kv_cache: bool) -> dict[str, Any]:
    """The tiny random LLaMA (seed 0, two layers) exported to ``target``."""
    from onnxpress.models.smollm2 import export_llm, tiny_llama

    export_llm(tiny_llama(0, layers=2), target, kv_cache=kv_cache)
    return {"model": "tiny_llama(0, layers=2): hidden 64, 4 heads over 2 KV heads, vocab 256"}


def quantize_peer(kind: str, block: int, source: str, out: str) -> dict[str, int]:
    """ONNX Runtime's quantizer ``kind`` on ``source``, written to ``out`` (weights inside);
    the output's count of each quantized op and of the MatMuls left float."""
    import contextlib
    import io
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    logging.disable(logging.WARNING)  # the quantizers' per-node chatter
    named = Path(out).with_name(f"{Path(out).stem}.named.onnx")
    model = onnx.load(source)
    for index, node in enumerate(model.graph.node):  # RTN drops nodes without a name
        node.name = node.name or f"unnamed_{node.op_type}_{index}"
    onnx.save(model, str(named))
    if kind == "dynamic":
        quantize_dynamic(named, out, op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
    else:
        config: Any = nbits.RTNWeightOnlyQuantConfig() if kind == "rtn" else \
            nbits.HQQWeightOnlyQuantConfig(block_size=block, bits=4)
        quantizer = nbits.MatMulNBitsQuantizer(
            str(named), bits=4, block_size=block, is_symmetric=kind == "rtn",
            accuracy_level=RTN_ACCURACY_LEVEL if kind == "rtn" else None, algo_config=config)
        with contextlib.redirect_stdout(io.StringIO()):  # RTN's progress bar
            quantizer.process()
        quantizer.model.save_model_to_file(out, use_external_data_format=False)
    named.unlink()
    ops = Counter(node.op_type for node in onnx.load(out, load_external_data=False).graph.node)
    return {op: ops[op] for op in ("MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger",
                                   "MatMul") if ops[op]}


SUITE = Suite("llm_decode", __doc__, models=("smollm2-135m",), smoke_models=(TINY,),
              measure=measure, tables=tables, variants=(*VARIANTS, *PEERS),
              smoke_variants=("fp32", "int4-b32", "int8", "ort-rtn-b32", "ort-hqq-b32"),
              repeats=5,
              options={"prompt": 128, "new_tokens": 32, "windows": 0, "plain": False,
                       "pipelines": ""},
              smoke_options={"prompt": 16, "new_tokens": 8, "windows": 8})
