"""The house rules that keep each piece of graph knowledge in one place, read from the
source: the dependency rule between pass families (DESIGN.md), no hidden function-local
imports, one view of a linear layer."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_LIBRARY = {"tests", "benchmarks", "build", ".venv", ".git"}
FAMILIES = {p.name for p in (ROOT / "passes").iterdir()
            if p.is_dir() and (p / "__init__.py").exists()}
#: what a family may import besides ir/ and itself: the pass protocol, the calibration-data
#: and activation-streaming interfaces, and the runtime interface of backends/ (running a
#: model, timing one, ONNX Runtime's own optimizer for ort-transformers, the model inputs,
#: the verified opset upgrade)
FAMILY_MAY_IMPORT = {
    "onnxpress.errors", "onnxpress.passes.base", "onnxpress.passes.calibration_data",
    "onnxpress.passes.activations", "onnxpress.backends.ort_runner",
    "onnxpress.backends.bench", "onnxpress.backends.ort_optimize", "onnxpress.backends.inputs",
    "onnxpress.backends.opset_upgrade", "onnxpress.backends.validity",
}
#: where importing inside a function is the point: the CLI's lazy loading, the package's
#: PEP 562 names, and the builders and frontends that pull in torch only when used
LAZY_ALLOWED = ("cli.py", "__init__.py", "models/", "frontends/torch_")


def _library() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if NOT_LIBRARY.isdisjoint(relative.parts):
            yield relative.as_posix(), path


def _imports(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            # `from onnxpress.backends import bench`: the module imported is bench
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                yield node, name if _is_module(name) else node.module
        elif isinstance(node, ast.Import):
            yield from ((node, a.name) for a in node.names)


def _is_module(name: str) -> bool:
    if not name.startswith("onnxpress."):
        return False
    path = ROOT.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _family(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "passes" and parts[2] in FAMILIES \
        else None


def _module_name(relative: str) -> str:
    return "onnxpress." + relative.removesuffix(".py").replace("/", ".")


def test_families_found() -> None:
    assert {"cleanup", "quantize", "prune", "lowrank", "tome", "ort_fusion", "lint"} <= FAMILIES


def test_pass_families_stand_alone() -> None:
    """A family imports ir/, the interfaces above and itself; never another family, the
    registry, the pipeline parser or a frontend. Only the catalogue knows every family."""
    broken = []
    for relative, path in _library():
        module = _module_name(relative)
        own = _family(module)
        for _, target in _imports(ast.parse(path.read_text())):
            if not target.startswith("onnxpress."):
                continue
            other = _family(target)
            if own is not None:
                allowed = (target.startswith("onnxpress.ir.") or target == "onnxpress.ir"
                           or other == own or target in FAMILY_MAY_IMPORT)
            else:  # outside the families, only the catalogue imports one
                allowed = other is None or relative == "passes/catalogue.py"
            if not allowed:
                broken.append(f"{relative} imports {target}")
    assert not broken, "\n".join(broken)


def test_ir_imports_nothing_above_it() -> None:
    broken = [f"{relative} imports {target}" for relative, path in _library()
              if relative.startswith("ir/")
              for _, target in _imports(ast.parse(path.read_text()))
              if target.startswith("onnxpress.") and not target.startswith("onnxpress.ir")
              and target != "onnxpress.errors"]
    assert not broken, "\n".join(broken)


def test_no_hidden_function_local_imports() -> None:
    """An import cycle hidden by a function-local import is still a cycle."""
    broken = []
    for relative, path in _library():
        if relative.startswith(LAZY_ALLOWED):
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            broken.extend(f"{relative}:{node.lineno} imports {target} inside "
                          f"{function.name}()" for node, target in _imports(function)
                          if target.startswith("onnxpress"))
    assert not broken, "\n".join(broken)


def test_no_private_third_party_modules() -> None:
    """onnx_ir's and onnxscript's private modules may change in any release."""
    broken = [f"{relative} imports {target}" for relative, path in _library()
              for _, target in _imports(ast.parse(path.read_text()))
              if target.split(".")[0] in ("onnx_ir", "onnxscript")
              and any(part.startswith("_") for part in target.split(".")[1:])]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("word", ["transB"])
def test_one_view_of_a_linear_layer(word: str) -> None:
    """Which axis of a weight is which is worked out in ir/layers.py alone."""
    naming = [relative for relative, path in _library() if word in path.read_text()]
    assert naming == ["ir/layers.py"]
