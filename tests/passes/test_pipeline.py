"""Pipeline strings, TOML configs, the registry and the PassManager's bookkeeping."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import onnxpress
from onnxpress.errors import BadInputError, PassFailedError
from onnxpress.models import small_cnn_path
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup import Cleanup, Cse, FoldConstants
from onnxpress.passes.manager import PassManager
from onnxpress.passes.pipeline import build, format_pipeline, load_config, parse_pipeline
from onnxpress.passes.quantize import LowerQdq, Quantize
from onnxpress.passes.registry import PassRegistry
from onnxpress.passes.tome import Tome


def test_parse_typed_options_and_round_trip() -> None:
    text = "cleanup(max_rounds=3,fold_batchnorm=false),cse,fold-constants(max_output_elements=64)"
    passes = parse_pipeline(text)
    assert passes == [Cleanup(max_rounds=3, fold_batchnorm=False), Cse(),
                      FoldConstants(max_output_elements=64)]
    assert format_pipeline(passes) == text
    assert parse_pipeline(format_pipeline(passes)) == passes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cleanup(max_rounds=three)", "cannot read 'three' as int"),
        ("cleanup(colour=red)", "has no option 'colour'"),
        ("cleanup(max_rounds=3", "unbalanced"),
        ("nonsense", "unknown pass 'nonsense'"),
        (" , ", "pipeline is empty"),
        ("cse(max_dedup_elements)", "needs key=value"),
    ],
)
def test_bad_pipelines_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_pipeline(text)


def test_toml_forms(tmp_path: Path) -> None:
    as_string = tmp_path / "a.toml"
    as_string.write_text('passes = "cleanup(max_rounds=2),dce"\ncheck = true\n')
    as_tables = tmp_path / "b.toml"
    as_tables.write_text('[[passes]]\nname = "cleanup"\nmax_rounds = 2\n[[passes]]\nname = "dce"\n')
    registry = PassRegistry.default()
    from onnxpress.passes.pipeline import build

    a, b = load_config(as_string), load_config(as_tables)
    assert a.check and not b.check
    assert build(a.passes, registry) == build(b.passes, registry)
    bad = tmp_path / "c.toml"
    bad.write_text("passes = [1, 2]\n")
    with pytest.raises(BadInputError, match="'passes' must be"):
        load_config(bad)


@dataclasses.dataclass(frozen=True)
class _BreaksTheGraph(Pass):
    name = "break"

    def call(self, model):
        node = next(iter(model.graph))
        model.graph.outputs[0] = node.outputs[0]  # fine
        model.graph.remove(node, safe=False)  # leaves its users dangling
        return PassStats(model, modified=True)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: parse_pipeline("tome(mode=drop)"), "tome(mode=drop): 'drop' is not one of merge, "
                                                "prune"),
    (lambda: Tome(mode="drop"), "tome(mode=drop): 'drop' is not one of merge, prune"),
    (lambda: parse_pipeline("weight-only(ops='MatMul,Conv')"),
     "weight-only(ops=MatMul,Conv): 'Conv' is not one of MatMul, Gemm"),
    (lambda: LowerQdq(form="fast"), "lower-qdq(form=fast): 'fast' is not one of qoperator, auto"),
    (lambda: Quantize(observer="max"), "'max' is not one of minmax, percentile, entropy, mse"),
])
def test_choices_are_checked_however_the_pass_is_made(make, message) -> None:
    with pytest.raises(BadInputError) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_list_options_from_strings_configs_and_python(tmp_path: Path) -> None:
    (parsed,) = parse_pipeline("quantize(ops='Conv, MatMul',exclude=head)")
    assert parsed.ops == ("Conv", "MatMul") and parsed.exclude == ("head",)
    assert parse_pipeline(parsed.spec()) == [parsed]
    assert parsed.spec() == "quantize(ops='Conv,MatMul',exclude=head)"
    assert Quantize(ops="Conv,MatMul") == Quantize(ops=["Conv", "MatMul"]) == Quantize(
        ops=("Conv", "MatMul"))
    config = tmp_path / "c.toml"
    config.write_text('[[passes]]\nname = "quantize"\nops = ["Conv", "MatMul"]\n'
                      'exclude = ["head"]\n')
    (from_toml,) = build(load_config(config).passes, PassRegistry.default())
    assert from_toml == parsed


def test_renamed_options_are_still_read_with_a_warning(caplog) -> None:
    with caplog.at_level("WARNING"):
        (prune,) = parse_pipeline("prune(budget=adaptive,compensate=false)")
    assert (prune.allocate, prune.refit) == ("adaptive", False)
    assert "prune(budget=...) is now prune(allocate=...)" in caplog.text
    assert "prune(compensate=...) is now prune(refit=...)" in caplog.text
    assert prune.spec() == "prune(refit=false,allocate=adaptive)"
    (quantize,) = parse_pipeline("int8(calibration=entropy)", target="tensorrt")[2:3]
    assert quantize.observer == "entropy"
    with pytest.raises(BadInputError, match="option 'allocate' given twice"):
        parse_pipeline("prune(budget=adaptive,allocate=uniform)")


def test_third_party_registry_and_verification_names_the_pass() -> None:
    registry = PassRegistry.default()
    registry.register(_BreaksTheGraph)
    assert "break" in registry.names()
    model = onnxpress.load(small_cnn_path())
    with pytest.raises(PassFailedError, match="pass 'break' broke the IR"):
        PassManager(parse_pipeline("break", registry)).run(model)


def test_report_records_each_pass() -> None:
    model = onnxpress.load(small_cnn_path())
    report = PassManager(parse_pipeline("eliminate-identity,fold-batchnorm,dce"),
                         check=True).run(model)
    names = [p.name for p in report.passes]
    assert names == ["eliminate-identity", "fold-batchnorm", "dce"]
    assert report.passes[1].stats["folded"] == 2
    assert all(p.nodes_after <= p.nodes_before for p in report.passes)
    assert report.passes[-1].parameters_after < report.passes[0].parameters_before
    assert report.check and all(c.ok for c in report.check)
    assert "fold-batchnorm" in "\n".join(report.lines())


@pytest.mark.parametrize("text, match", [
    ('check = "false"', "'check' must be true or false"),
    ('verify = "no"', "'verify' must be true or false"),
    ("target = 5", "'target' must be a target name"),
    ("calibration = 5", "'calibration' must be a path"),
])
def test_config_values_of_the_wrong_type_are_refused(text: str, match: str,
                                                     tmp_path: Path) -> None:
    """A string "false" used to turn the check on; a number as target was ignored
    (issue 22, C3)."""
    config = tmp_path / "c.toml"
    config.write_text(f'passes = "cleanup"\n{text}\n')
    with pytest.raises(BadInputError, match=match):
        load_config(config)


def test_a_configs_target_and_verify_are_honoured(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('passes = "int8"\ntarget = "bogus"\n')
    with pytest.raises(BadInputError, match="unknown target 'bogus'"):
        onnxpress.compile(small_cnn_path(), config=config)
    config.write_text('passes = "int8"\ntarget = "tensorrt"\nverify = false\n')
    calibration = [{"image": np.random.default_rng(0).random((1, 1, 8, 8), np.float32)}]
    seen: dict = {}
    original = PassManager.__init__

    def spy(self, *args, **kwargs) -> None:
        seen.update(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PassManager, "__init__", spy)
    _, report = onnxpress.compile(small_cnn_path(), config=config, calibration=calibration,
                                  return_report=True)
    assert report.passes[-1].name == "lint-tensorrt"  # the preset, for the config's target
    assert seen["verify"] is False


@pytest.mark.parametrize("option, match", [
    ("max_rounds=true", "cannot read 'true' as int"), ("max_rounds=-1", "give a number >= 0"),
    ("max_rounds=2,max_rounds=3", "given twice"),
])
def test_options_that_are_no_setting_are_refused(option: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        build(parse_pipeline(f"cleanup({option})"), PassRegistry.default())


def test_nan_and_booleans_from_a_config_are_no_setting(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    for table, match in (('name = "cleanup"\nmax_rounds = true', "expected int"),
                         ('name = "fuse-for-ort"\nmask_value = nan', "finite number")):
        config.write_text(f"[[passes]]\n{table}\n")
        with pytest.raises(BadInputError, match=match):
            build(load_config(config).passes, PassRegistry.default())
