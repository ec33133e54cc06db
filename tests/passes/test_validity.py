"""Output validity: a compiled model passes onnx.checker and loads in ONNX Runtime wherever
its input did, else compile fails naming the pass, as a bug of ours (exit 3); an input
that fails a validator is not blamed on a pass."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.cli import main
from onnxpress.errors import PassFailedError
from onnxpress.models import small_cnn_path
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.manager import PassManager
from onnxpress.passes.pipeline import parse_pipeline
from onnxpress.passes.registry import PassRegistry


class _Corrupts(Pass):
    """Gives the first Conv an attribute no Conv schema has: the IR stays sound (verify
    passes), the file does not."""

    name = "corrupt"

    def call(self, model):
        conv = next(n for n in model.graph if n.op_type == "Conv")
        conv.attributes["bogus"] = ir.AttrInt64("bogus", 1)
        return PassStats(model, modified=True)


_DEFAULT = PassRegistry.default  # kept: the CLI test patches the default registry


def _registry() -> PassRegistry:
    registry = _DEFAULT()
    registry.register(_Corrupts)
    return registry


def test_a_pass_that_writes_an_invalid_model_is_named() -> None:
    model = onnxpress.load(small_cnn_path())
    passes = parse_pipeline("eliminate-identity,corrupt,dce", _registry())
    with pytest.raises(PassFailedError, match=r"pass 'corrupt' wrote a model that "
                                              r"onnx.checker rejects \(the input passed\)"):
        PassManager(passes).run(model)
    assert PassFailedError.exit_code == 3


def test_large_models_are_validated_and_checked_through_files(monkeypatch) -> None:
    """Past ``IN_MEMORY_BYTES`` of weights the input's snapshot and every validation go
    through temporary files with external data (bytes would hold the weights twice more):
    the same verdicts, the same check, and nothing left behind."""
    import tempfile

    from onnxpress.backends import ort_runner
    from onnxpress.passes import manager

    monkeypatch.setattr(ort_runner, "IN_MEMORY_BYTES", 1)
    monkeypatch.setattr(manager, "IN_MEMORY_BYTES", 1)
    before = set(Path(tempfile.gettempdir()).glob(".onnxpress-*"))
    model = onnxpress.load(small_cnn_path())
    report = PassManager(parse_pipeline("cleanup", _registry()), check=True).run(model)
    assert report.check and not report.check_failed
    model = onnxpress.load(small_cnn_path())
    passes = parse_pipeline("eliminate-identity,corrupt,dce", _registry())
    with pytest.raises(PassFailedError, match=r"pass 'corrupt' wrote a model that "
                                              r"onnx.checker rejects \(the input passed\)"):
        PassManager(passes).run(model)
    assert set(Path(tempfile.gettempdir()).glob(".onnxpress-*")) == before


def test_the_cli_reports_it_as_an_internal_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(PassRegistry, "default", classmethod(lambda cls: _registry()))
    out = tmp_path / "o.onnx"
    assert main(["compile", "-o", str(out), "--passes", "cleanup,corrupt"]) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("onnxpress: internal error: pass 'corrupt' wrote a model")
    assert not out.exists()


def test_an_input_that_fails_a_validator_is_not_blamed_on_a_pass(tmp_path: Path) -> None:
    """A custom-domain op ONNX Runtime has no kernel for: the input does not load, the
    output is held to onnx.checker only, and the report says so."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]),
         helper.make_node("Fancy", ["a"], ["b"], domain="com.example"),
         helper.make_node("Identity", ["b"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.example", 1)])
    model, report = onnxpress.compile(onnx.load_from_string(proto.SerializeToString()),
                                      "cleanup", return_report=True)
    assert any("the input model fails ONNX Runtime" in note for note in report.notes)
    assert [n.op_type for n in model.graph] == ["Fancy"]
