"""The cleanup benchmark's child processes: export a reference model, or run one tool on
one file and report its own time and peak memory."""

from __future__ import annotations

import json
import resource
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
MODELS = ("vit_s16", "resnet50", "bert")
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


# --------------------------------------------------------------------------- export


def _model_spec(name: str) -> dict[str, Any]:
    """Builder, example inputs and export names of one reference model (imports torch)."""
    from onnxpress.models import bert, resnet, vit

    if name == "vit_s16":
        return dict(
            module=vit.vit_s16(),
            inputs=vit.example_inputs(batch=2),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        )
    if name in ("resnet50", "resnet18"):
        return dict(
            module=getattr(resnet, name)(),
            inputs=resnet.example_inputs(batch=1),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes=None,
        )
    if name in ("bert", "bert_base", "bert_small"):
        module = bert.bert_small() if name == "bert_small" else bert.bert_base(seq_len=128)
        cfg = module.config
        batch = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}
        return dict(
            module=module,
            inputs=bert.example_inputs(batch=2, seq_len=cfg.seq_len, vocab_size=cfg.vocab_size),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes={
                **batch,
                "last_hidden_state": {0: "batch"},
                "pooler_output": {0: "batch"},
            },
        )
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}, resnet18, bert_small")


def export_model(name: str, exporter: str, path: Path) -> None:
    """Export one reference model (in a subprocess, so torch never loads into the driver)."""
    from onnxpress.models.export import export_onnx

    spec = _model_spec(name)
    export_onnx(
        spec["module"],
        spec["inputs"],
        path,
        input_names=spec["input_names"],
        output_names=spec["output_names"],
        dynamic_axes=spec["dynamic_axes"],
        exporter=exporter,
        opset=DEFAULT_OPSET[exporter],
    )


# --------------------------------------------------------------------------- tool worker


def _run_tool(tool: str, src: str, dst: str) -> None:
    """Load ``src``, optimise it with ``tool``, save to ``dst``. Runs in the worker process."""
    if tool == "onnxpress":
        import onnxpress

        m = onnxpress.load(src)
        m = onnxpress.compile(m, passes="cleanup")
        onnxpress.save(m, dst)
    elif tool == "onnxslim":
        import onnx
        import onnxslim

        m = onnxslim.slim(src)
        onnx.save(m, dst)
    elif tool == "onnxscript":
        import onnx
        import onnxscript.optimizer

        m = onnxscript.optimizer.optimize(onnx.load(src))
        onnx.save(m, dst)
    elif tool == "onnxsim":
        import onnx
        import onnxsim

        m, ok = onnxsim.simplify(onnx.load(src))
        if not ok:
            raise RuntimeError("onnxsim.simplify reported that its own check failed")
        onnx.save(m, dst)
    else:
        raise ValueError(f"unknown tool {tool!r}")


def _tool_imports(tool: str) -> None:
    """Import what ``tool`` needs, so that import time is measured apart from the work."""
    import onnx  # noqa: F401

    if tool == "onnxpress":
        import onnxpress

        onnxpress.load, onnxpress.compile, onnxpress.save  # noqa: B018  (resolve lazy names)
    elif tool == "onnxslim":
        import onnxslim  # noqa: F401
    elif tool == "onnxscript":
        import onnxscript.optimizer  # noqa: F401
    elif tool == "onnxsim":
        import onnxsim  # noqa: F401


def _peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    ``VmHWM`` from /proc (per address space, so it starts afresh at exec); ``ru_maxrss`` is
    the fallback, but on Linux it survives exec and would include the forking driver's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(tool: str, src: str, dst: str, result_path: str) -> int:
    """Subprocess entry: time imports, then load+optimise+save; write a JSON result."""
    res: dict[str, Any] = {"tool": tool}
    t0 = time.perf_counter()
    try:
        _tool_imports(tool)
        res["import_s"] = time.perf_counter() - t0
        res["rss_after_import_mb"] = _peak_rss_mb()
        t1 = time.perf_counter()
        _run_tool(tool, src, dst)
        res["wall_s"] = time.perf_counter() - t1
        res["status"] = "ok"
    except ModuleNotFoundError as e:
        res["status"] = (
            "not installed" if tool != "onnxpress" and e.name and tool in e.name else "error"
        )
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc().splitlines()[-15:]
    except BaseException as e:  # noqa: BLE001  (report anything, incl. SystemExit from a tool)
        res["status"] = "error"
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
        res["traceback"] = traceback.format_exc().splitlines()[-15:]
    res["peak_rss_mb"] = _peak_rss_mb()
    Path(result_path).write_text(json.dumps(res))
    return 0 if res["status"] == "ok" else 1


# --------------------------------------------------------------------------- driver helpers
