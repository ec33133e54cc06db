"""The CLI contract: commands, exit codes 0/1/2, one-line errors, atomic outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from onnxpress.cli import main
from onnxpress.models import small_cnn_path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_compile_with_no_model_compresses_the_embedded_digits_cnn(tmp_path: Path,
                                                                   capsys) -> None:
    """README's main command: the trained digits CNN through the 'compress' preset, then
    accuracy, size and latency against the original, measured."""
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    assert main(["compile", "-o", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["pipeline"] == "cleanup,prune(ratio=0.5),fuse-for-ort"
    params = data["summary"]["parameters"]
    assert params[1] < params[0] / 3
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert not ops & {"BatchNormalization", "Dropout", "Identity"}
    said = capsys.readouterr().out
    accuracy = said.split("top-1 on its 450 test digits: ")[1].split()
    # 99.78% on the CNN as first trained, 98.44% since it trains on 1213 images (README)
    assert accuracy[0] == "100.00%" and float(accuracy[2].rstrip("%")) >= 98.0
    assert "x smaller)" in said and "batch 1 " in said and "batch 64 " in said


def test_compile_small_cnn_with_check_and_report(tmp_path: Path, capsys) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    assert main(["compile", str(small_cnn_path()), "-o", str(out), "--check", "--report",
                 str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["pipeline"] == "cleanup,fuse-for-ort"  # the ort-cpu target's default
    assert data["summary"]["nodes"][1] < data["summary"]["nodes"][0]
    assert all(c["ok"] for c in data["check"])
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert not ops & {"BatchNormalization", "Dropout", "Identity"}
    assert "cleanup" in capsys.readouterr().out


def test_compile_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["compile", "-o", str(first)]) == 0
    assert main(["compile", "-o", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_config_file_sets_the_pipeline(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[passes]]\nname = "eliminate-identity"\n\n[[passes]]\nname = "dce"\n')
    report = tmp_path / "r.json"
    assert main(["compile", "-o", str(tmp_path / "o.onnx"), "--config", str(config),
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["pipeline"] == "eliminate-identity,dce"


def test_never_overwrites_the_input(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(small_cnn_path().read_bytes())
    assert main(["compile", str(model), "-o", str(model)]) == 2
    assert "which this job reads" in _error_line(capsys)
    assert model.read_bytes() == small_cnn_path().read_bytes()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda: small_cnn_path().read_bytes()[:2000], "truncated"),
        (lambda: b"this is a text file, not ONNX\n" * 10, "ONNX"),
    ],
    ids=["truncated", "not-onnx"],
)
def test_bad_files_give_exit_2_and_one_line(tmp_path: Path, capsys, content, expected) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content())
    assert main(["compile", str(bad), "-o", str(tmp_path / "o.onnx")]) == 2
    line = _error_line(capsys)
    assert str(bad) in line and expected in line
    assert not (tmp_path / "o.onnx").exists()


def test_missing_output_folder(tmp_path: Path, capsys) -> None:
    assert main(["compile", "-o", str(tmp_path / "nope" / "o.onnx")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_missing_model_and_unknown_pass(tmp_path: Path, capsys) -> None:
    assert main(["compile", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "no such file" in _error_line(capsys)
    assert main(["compile", "-o", str(tmp_path / "o.onnx"), "--passes", "cleanup,frobnicate"]) == 2
    assert "unknown pass 'frobnicate'" in _error_line(capsys)


def _unknown_domain_model(path: Path) -> None:
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("FancyOp", ["a"], ["b"], domain="com.example", alpha=1.0),
        helper.make_node("Identity", ["b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, path)


def test_unknown_domain_compiles_untouched_but_cannot_be_checked(tmp_path: Path, capsys) -> None:
    model, out = tmp_path / "custom.onnx", tmp_path / "o.onnx"
    _unknown_domain_model(model)
    assert main(["compile", str(model), "-o", str(out)]) == 0
    nodes = onnx.load(out).graph.node
    custom = [n for n in nodes if n.domain == "com.example"]
    assert len(custom) == 1 and custom[0].attribute[0].f == 1.0
    assert [n.op_type for n in nodes] == ["FancyOp"]  # the Identities around it are gone
    assert "left untouched: com.example::FancyOp x1" in capsys.readouterr().out
    assert main(["compile", str(model), "-o", str(out), "--check"]) == 2
    line = _error_line(capsys)
    assert "FancyOp" in line or "com.example" in line


def test_check_failure_exits_1(tmp_path: Path, capsys) -> None:
    # Tolerances no float pipeline can meet after folding BatchNorm into Conv; the default
    # atol (1e-6) alone passes its rounding.
    small = str(small_cnn_path())
    assert main(["compile", small, "-o", str(tmp_path / "o.onnx"), "--check",
                 "--tolerance", "0", "--atol", "0"]) == 1
    assert "numeric check failed" in _error_line(capsys)
    assert main(["compile", small, "-o", str(tmp_path / "o.onnx"), "--check",
                 "--tolerance", "0"]) == 0


def test_inspect_compare_bench(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.onnx"
    assert main(["compile", str(small_cnn_path()), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["name"] == "image" and "Conv" in info["ops"]
    assert main(["compare", str(small_cnn_path()), str(out), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["output"] == "logits" and row["max_abs"] < 1e-4 and row["top1_agreement"] == 1.0
    assert main(["bench", str(small_cnn_path()), str(out), "--repeats", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [str(small_cnn_path()), str(out)]
    assert all(r["median_ms"] > 0 for r in rows)


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "onnxpress", "inspect", "missing.onnx"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("onnxpress: error: missing.onnx")
    assert "Traceback" not in done.stderr


def test_keep_initializer_inputs_keeps_them_overridable(tmp_path: Path) -> None:
    """The model is loaded once, with the option (compile used to load it again without)."""
    light = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    inputs = len(onnx.load(str(light)).graph.input)
    assert inputs > 1  # the old exporter lists every initializer as an input too
    kept, plain = tmp_path / "kept.onnx", tmp_path / "plain.onnx"
    assert main(["compile", str(light), "-o", str(kept), "--passes", "dce",
                 "--keep-initializer-inputs"]) == 0
    assert main(["compile", str(light), "-o", str(plain), "--passes", "dce"]) == 0
    assert len(onnx.load(str(kept)).graph.input) == inputs
    assert len(onnx.load(str(plain)).graph.input) == 1

