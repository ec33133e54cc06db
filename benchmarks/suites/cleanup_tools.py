"""The ``cleanup`` suite's child processes: export a reference model, or run one graph
cleanup tool on one file and time it. Only the standard library is imported at the top, so
that a tool's import time and memory are its own."""

from __future__ import annotations

import time
from typing import Any

TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
#: tool -> (module to find, the distribution, how to install it)
PACKAGES = {"onnxpress": ("onnxpress", "onnxpress", "pip install -e ."),
            "onnxslim": ("onnxslim", "onnxslim", "pip install -e .[bench]"),
            "onnxscript": ("onnxscript", "onnxscript", "pip install onnxscript"),
            "onnxsim": ("onnxsim", "onnxsim", "pip install -e .[bench]")}
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


def _model_spec(name: str) -> dict[str, Any]:
    """Builder, example inputs and export names of one reference model (imports torch)."""
    from onnxpress.models import bert, resnet, vit

    if name == "vit_s16":
        logits = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
        return dict(module=vit.vit_s16(), inputs=vit.example_inputs(batch=2),
                    input_names=["pixel_values"], output_names=["logits"], dynamic_axes=logits)
    if name in ("resnet50", "resnet18"):
        return dict(module=getattr(resnet, name)(), inputs=resnet.example_inputs(batch=1),
                    input_names=["pixel_values"], output_names=["logits"], dynamic_axes=None)
    if name in ("bert", "bert_small"):
        module = bert.bert_small() if name == "bert_small" else bert.bert_base(seq_len=128)
        cfg = module.config
        names = ("input_ids", "attention_mask", "last_hidden_state", "pooler_output")
        return dict(module=module, inputs=bert.example_inputs(
            batch=2, seq_len=cfg.seq_len, vocab_size=cfg.vocab_size),
            input_names=list(names[:2]), output_names=list(names[2:]),
            dynamic_axes={n: {0: "batch"} for n in names})
    raise ValueError(f"unknown model {name!r}: vit_s16, resnet50, resnet18, bert, bert_small")


def export_model(name: str, exporter: str, target: str) -> None:
    """Export one reference model (dynamo with ``optimize=False``: the raw graph reaches
    every tool)."""
    from onnxpress.models.export import export_onnx

    spec = _model_spec(name)
    export_onnx(spec["module"], spec["inputs"], target, input_names=spec["input_names"],
                output_names=spec["output_names"], dynamic_axes=spec["dynamic_axes"],
                exporter=exporter, opset=DEFAULT_OPSET[exporter])


def _imports(tool: str) -> None:
    """Import what ``tool`` needs, so that import time is measured apart from the work."""
    import onnx  # noqa: F401

    if tool == "onnxpress":
        import onnxpress

        onnxpress.load, onnxpress.compile, onnxpress.save  # noqa: B018 - resolve lazy names
    elif tool == "onnxslim":
        import onnxslim  # noqa: F401
    elif tool == "onnxscript":
        import onnxscript.optimizer  # noqa: F401
    elif tool == "onnxsim":
        import onnxsim  # noqa: F401


def _optimise(tool: str, src: str, dst: str) -> None:
    """Load ``src``, optimise it with ``tool``, save to ``dst``."""
    import onnx

    if tool == "onnxpress":
        import onnxpress

        onnxpress.save(onnxpress.compile(onnxpress.load(src), passes="cleanup",
                                         progress=False), dst)
    elif tool == "onnxslim":
        import onnxslim

        onnx.save(onnxslim.slim(src), dst)
    elif tool == "onnxscript":
        import onnxscript.optimizer

        onnx.save(onnxscript.optimizer.optimize(onnx.load(src)), dst)
    elif tool == "onnxsim":
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(src))
        if not ok:
            raise RuntimeError("onnxsim.simplify reported that its own check failed")
        onnx.save(model, dst)
    else:
        raise ValueError(f"unknown tool {tool!r}")


def run_tool(tool: str, src: str, dst: str) -> dict[str, float]:
    """Time ``tool``'s imports, then load + optimise + save (``time.perf_counter``)."""
    from ..core.memory import peak_rss_mb

    started = time.perf_counter()
    _imports(tool)
    import_s = time.perf_counter() - started
    after_import = peak_rss_mb()
    started = time.perf_counter()
    _optimise(tool, src, dst)
    return {"import_s": import_s, "rss_after_import_mb": after_import,
            "wall_s": time.perf_counter() - started}
