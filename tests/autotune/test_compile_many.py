"""``onnxpress compile-many``: six zoo exports compiled as Ray tasks on a local two-CPU
instance (real Ray) write the same files as six single ``onnxpress compile`` runs; a model
refused is one line, the others still compile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onnxpress.cli import main
from onnxpress.models.zoo import ZOO

FLEET = ("vit_32", "resnet18", "resnet50", "mobilenet_v2", "bert_small", "deit_tiny")
PASSES = "cleanup,fuse-for-ort"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("zoo")
    return [ZOO[name].export(folder / f"{name}.onnx") for name in FLEET]


def test_compile_many_on_ray_writes_what_single_compiles_write(exports: list[Path],
                                                              tmp_path: Path) -> None:
    fleet, single = tmp_path / "fleet", tmp_path / "single"
    fleet.mkdir()
    single.mkdir()
    done = subprocess.run([sys.executable, "-m", "onnxpress", "compile-many",
                           *map(str, exports), "-o", str(fleet), "--passes", PASSES,
                           "--ray", "--workers", "2"], capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 of 6 models compiled" in done.stdout
    for model in exports:
        out = single / model.name
        assert main(["compile", str(model), "-o", str(out), "--passes", PASSES]) == 0
        assert (fleet / model.name).read_bytes() == out.read_bytes(), model.name


def test_a_refused_model_is_one_line_and_the_others_compile(exports: list[Path],
                                                           tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(["compile-many", str(exports[0]), str(broken), "-o", str(out_dir),
                 "--passes", PASSES, "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 2
    assert (out_dir / exports[0].name).is_file() and "1 of 2 models compiled" in out
    assert len(err.strip().splitlines()) == 1 and err.count("broken.onnx") == 1
    # an output that would overwrite an input refuses the whole fleet before any work
    assert main(["compile-many", str(exports[0]), str(broken), "-o", str(tmp_path)]) == 2
    assert broken.read_bytes() == b"not a model"
