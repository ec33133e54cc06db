"""``llm_compress``: pruning and low-rank factoring of SmolLM2-135M's linear layers, one-shot
(no retraining): perplexity against the fraction of linear parameters removed, with each
compile's wall time and peak memory (issue 23, part 5).

The linear parameters are the decoder's 210 projections (Q, K, V, O, gate, up, down: 106.2 M
weights); the LM head shares the embedding's matrix and is left alone by every method.
Methods (``METHODS``), each at ``fractions`` (5%, 10%, 20%, 30%) of those parameters:

- ``magnitude``: ``prune(structure=unstructured)``, the smallest ``|W|`` of each layer zeroed;
- ``wanda``: the same with ``importance=activation``: ``|W| * ||X_j||`` per output row;
- ``mlp-refit``: ``prune(structure=mlp,importance=activation,refit=true)``: SwiGLU width
  (gate/up rows and down columns together, ranked by the refit's own error estimate), the
  down projection refitted by least squares; ratio = fraction / the MLPs' share of the
  linear parameters, so that the same count goes;
- ``svd-plain`` / ``svd-whitened``: ``lowrank(params=1-fraction,allocate=tail)`` without
  and with the activation whitening (SVD-LLM's ``W S``, ``S`` the Cholesky factor of the
  input Gram), one-shot: the budget goes to the layers whose spectra lose least;

and at 2:4 (50%, TensorRT's sparse layout) ``magnitude-2:4`` and ``wanda-2:4``. Zeroed
weights count as removed (the file keeps them; a sparse kernel or format would not).

Every variant compiles ``cleanup`` 's output (cleaned once and cached, with external data:
``cleanup`` itself takes about 40 s and 3.8 GB on SmolLM2) in a fresh child process
(:mod:`benchmarks.core.child`) through ``onnxpress.compile``, as a user would: its wall
time and peak RSS (imports, loading the model, validating input and output, streaming the
calibration data, the pass, saving; ``2 GB`` and ``5 min`` are the issue's bounds).
``--set validate=false`` runs the pass through a ``PassManager`` without the validation
(the pass's own cost). Calibration: ``smollm2_calibration.npz`` (20 windows x 128 tokens,
batches of 4, disjoint from the scored text); perplexity on ``smollm2-text`` (58 x 128
tokens) through :func:`onnxpress.evaluation.evaluate` (fp32: 42.09), and the mean
KL(fp32 || variant) per scored token (:func:`onnxpress.evaluation.divergence`): the damage
itself, where perplexity on 7.4k tokens moves by chance (magnitude pruning of 10% scored
below fp32). The pass's notes (layers whose estimated output error is large) come with each
row.

    python -m benchmarks.run --suite llm_compress [--set fractions=0.1,0.2]
        [--variants wanda,svd-whitened]

``--smoke``: the tiny random LLaMA (two layers, exported in a child, cached), 8 random
windows of 16 tokens to calibrate and to score, fractions 0.1 and 0.3.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cache import version_tag
from ..core.child import run_child
from ..core.suite import Context, Row, Suite, log, ok, row, step
from ..core.tables import markdown, table

#: method -> pipeline template (``{x}``: the fraction of linear parameters removed,
#: ``{keep}``: 1 - x, ``{mlp}``: x over the MLPs' share of the linear parameters)
METHODS = {
    "magnitude": "prune(structure=unstructured,sparsity={x})",
    "wanda": "prune(structure=unstructured,sparsity={x},importance=activation)",
    "mlp-refit": "prune(structure=mlp,ratio={mlp},importance=activation,refit=true)",
    "svd-plain": "lowrank(params={keep},aware=false,allocate=tail)",
    "svd-whitened": "lowrank(params={keep},aware=true,allocate=tail,sequential=false)",
}
#: fixed-sparsity variants (2:4 keeps half)
FIXED = {
    "magnitude-2:4": "prune(structure=nm,n=2,m=4)",
    "wanda-2:4": "prune(structure=nm,n=2,m=4,importance=activation)",
}
TINY = "tiny-llama"
CALIBRATION_BATCH = 4
COMPILE_TIMEOUT_S = 1800


def measure(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in ctx.models:
        source, calibration, text = _subject(model, ctx)
        base = row(model, "fp32", fraction=0.0, spec="cleanup")
        with step(base, "perplexity"):
            base["perplexity"] = _perplexity(source, text)
        rows.append(base)
        for name, spec, fraction in _variants(ctx):
            r = row(model, name, fraction=fraction)
            with step(r, "compile in a child"):
                out = ctx.folder(model) / f"{name}-{fraction}.onnx".replace(":", "_")
                said = run_child(compile_variant, timeout=COMPILE_TIMEOUT_S, source=str(source),
                                 template=spec, fraction=fraction, calibration=calibration,
                                 out=str(out), validate=bool(ctx.options["validate"]))
                r.update(said["value"], seconds=round(said["seconds"], 1),
                         peak_rss_mb=round(said["peak_rss_mb"], 1), path=str(out))
            if r["status"] == "ok":
                with step(r, "perplexity"):
                    r["perplexity"] = _perplexity(out, text)
                    r["perplexity_ratio"] = r["perplexity"] / base.get("perplexity", np.nan)
                with step(r, "divergence"):
                    r["kl"] = _divergence(out, source, text)
                    log(f"{model} {name} {fraction:.0%}: perplexity {r['perplexity']:.2f}, KL "
                        f"{r['kl']:.4f}, {r['seconds']:.0f} s, {r['peak_rss_mb']:.0f} MB")
                for written in (out, out.with_name(out.name + ".data")):
                    written.unlink(missing_ok=True)
            else:
                log(f"{model} {name} {fraction:.0%}: {r.get('error', r['status'])}")
            rows.append(r)
    return rows


def _variants(ctx: Context) -> list[tuple[str, str, float]]:
    fractions = [float(f) for f in str(ctx.options["fractions"]).split(",") if f.strip()]
    found = [(name, spec, x) for name, spec in METHODS.items() if ctx.wants(name)
             for x in fractions]
    return found + [(name, spec, 0.5) for name, spec in FIXED.items() if ctx.wants(name)]


def _subject(model: str, ctx: Context) -> tuple[Path, dict[str, Any], Any]:
    """(the cleaned model, how the child reads calibration data, the scored text)."""
    from onnxpress.models.datasets import Dataset

    if model == TINY:
        folder = ctx.folder(model)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 256, (16, 16)).astype(np.int64)
        np.savez(folder / "calibration.npz", input_ids=ids[:8], attention_mask=np.ones_like(
            ids[:8]))
        from onnxpress.models.build_llm_texts import next_tokens

        text = Dataset("tiny text", {"input_ids": ids[8:], "attention_mask": np.ones_like(
            ids[8:])}, None, {"targets": next_tokens(ids[8:])})
        calibration = {"path": str(folder / "calibration.npz"), "batch_size": CALIBRATION_BATCH}
    else:
        from onnxpress.models.build_llm_texts import CALIBRATION_NPZ
        from onnxpress.models.datasets import load_dataset

        text = load_dataset("smollm2-text")
        calibration = {"path": str(CALIBRATION_NPZ), "batch_size": CALIBRATION_BATCH}
    entry = ctx.cache.file((model, "cleanup", version_tag("torch", "transformers")),
                           lambda path: run_child(cleaned, target=str(path), model=model))
    log(f"{model}: cleanup (and export) {entry.meta.get('seconds', 0):.0f} s, peak RSS "
        f"{entry.meta.get('peak_rss_mb', 0):.0f} MB (cached: {entry.cached})")
    return entry.path, calibration, text


def _divergence(path: Path | str, reference: Path | str, text: Any) -> float:
    from onnxpress.evaluation import divergence

    return divergence(path, reference, text, progress=False)


def _perplexity(path: Path | str, text: Any) -> float:
    from onnxpress.evaluation import evaluate

    return float(evaluate(path, text, progress=False).value)


# --- in children --------------------------------------------------------------------------

def cleaned(target: str, model: str) -> dict[str, Any]:
    """``cleanup`` of the model's export (no KV cache) to ``target``."""
    import onnxpress
    from onnxpress.models.smollm2 import export_llm, smollm2_onnx, tiny_llama

    if model == TINY:
        source = Path(target).with_suffix(".export.onnx")
        export_llm(tiny_llama(0, layers=2), str(source), kv_cache=False)
    else:
        source = smollm2_onnx(kv_cache=False)
    started = time.perf_counter()
    onnxpress.save(onnxpress.compile(source, "cleanup", progress=False), target,
                   external_data=True)  # the children map the weights, not parse them
    from ..core.memory import peak_rss_mb

    return {"seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def linear_weights(model: Any, mlp: bool = False) -> tuple[int, int]:
    """(weights of the constant-weight MatMul/Gemm layers, with ``mlp`` those of them in
    prunable MLP width groups, else 0): what the fractions count."""
    sizes = {node: int(np.prod(node.inputs[1].shape)) for node in model.graph
             if node.op_type in ("MatMul", "Gemm") and node.inputs[1].const_value is not None}
    if not mlp:
        return sum(sizes.values()), 0
    from onnxpress.ir.channel_groups import channel_groups

    inside = {item.node for group in channel_groups(model.graph)
              if group.kind == "linear" and not group.blocked for item in group.slices
              if item.role in ("producer", "consumer")}
    return sum(sizes.values()), sum(size for node, size in sizes.items() if node in inside)


def compile_variant(source: str, template: str, fraction: float, calibration: dict[str, Any],
                    out: str, validate: bool = True) -> dict[str, Any]:
    """Compile ``template`` at ``fraction`` on ``source`` to ``out``: the spec, the pass's
    stats and notes, and the fraction of linear weights it removed (zeroed or cut).
    ``validate``: through ``onnxpress.compile``, which also holds the output to the
    input's validity (onnx.checker, an ONNX Runtime load of each); else a ``PassManager``
    without that validation (the pass's own cost; the IR is still verified)."""
    import onnxpress
    from onnxpress.passes.pipeline import build, split_pipeline
    from onnxpress.passes.registry import PassRegistry

    model = onnxpress.load(source)
    total, mlp = linear_weights(model, mlp="{mlp}" in template)
    spec = template.format(x=round(fraction, 4), keep=round(1 - fraction, 4),
                           mlp=round(min(fraction * total / max(mlp, 1), 0.95), 4))
    data = onnxpress.CalibrationData(calibration["path"], batch_size=calibration["batch_size"])
    if validate:
        model, report = onnxpress.compile(model, spec, calibration=data, return_report=True,
                                          progress=False)
    else:
        passes = build(split_pipeline(spec), PassRegistry.default())
        report = onnxpress.PassManager(passes, validate=False, check_data=data).run(model)
    record = report.passes[-1]
    stats = record.stats or {}
    if "weights_zeroed" in stats:
        removed = stats["weights_zeroed"]
    elif "weights_before" in stats:
        removed = stats["weights_before"] - stats["weights_after"]
    else:
        removed = total - linear_weights(model)[0]
    onnxpress.save(model, out, external_data=True)
    brief = {k: v for k, v in stats.items() if k != "factored"}
    notes = sorted(record.notes, key=lambda n: "expect" not in n)  # warnings first
    return {"spec": spec, "removed": removed / total, "linear_weights": total,
            "stats": brief, "notes": notes[:6]}


# --- tables -----------------------------------------------------------------------------------

def tables(rows: list[Row]) -> dict[str, str]:
    done = ok(rows)
    models = list(dict.fromkeys(r["model"] for r in done))
    result = {}
    for model in models:
        mine = [r for r in done if r["model"] == model]
        base = next((r["perplexity"] for r in mine if r["variant"] == "fp32"), np.nan)
        fractions = sorted({r["fraction"] for r in mine if r["variant"] in METHODS})
        grid = {(r["variant"], r["fraction"]): r for r in mine}

        def cell(method: str, x: float) -> str:
            r = grid.get((method, x))
            if r is None:
                return "-"
            return f"{r['perplexity']:.2f} ({r['perplexity'] / base - 1:+.0%})"

        def kl(method: str, x: float) -> str:
            r = grid.get((method, x))
            return "-" if r is None or "kl" not in r else f"{r['kl']:.4f}"

        header = ("method", *(f"{x:.0%} removed" for x in fractions))
        shown = [m for m in METHODS if any((m, x) in grid for x in fractions)]
        result[f"{model}: perplexity (fp32 {base:.2f}) against linear parameters removed"] = (
            markdown(header, [[m, *(cell(m, x) for x in fractions)] for m in shown]))
        result[f"{model}: mean KL(fp32 || compressed) per token, nats"] = (
            markdown(header, [[m, *(kl(m, x) for x in fractions)] for m in shown]))
        compiled = [r for r in mine if r["variant"] != "fp32"]
        result[f"{model}: each compile (fresh child process)"] = table(
            ("model", "variant", "target", "removed", "perplexity", "KL", "compile s",
             "peak RSS MB", "notes"),
            compiled, lambda r: (f"{r['fraction']:.0%}", f"{r['removed']:.1%}",
                                 f"{r['perplexity']:.2f}", f"{r.get('kl', np.nan):.4f}",
                                 f"{r['seconds']:.0f}",
                                 f"{r['peak_rss_mb']:.0f}",
                                 "; ".join(n[:120] for n in r["notes"][:2]) or "-"))
    return result


SUITE = Suite("llm_compress", __doc__, models=("smollm2-135m",), smoke_models=(TINY,),
              measure=measure, tables=tables, variants=(*METHODS, *FIXED), repeats=1,
              options={"fractions": "0.05,0.1,0.2,0.3", "validate": True},
              smoke_options={"fractions": "0.1,0.3"})
