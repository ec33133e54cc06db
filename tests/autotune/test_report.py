"""What a finished search leaves: the page with the front (plot, tables, what was rejected
and why), and the chosen pipeline as a string and a TOML config, each of which makes
``onnxpress compile`` write the chosen candidate's bytes again."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

import onnxpress
from onnxpress.autotune.report import alone
from onnxpress.autotune.space import plan
from onnxpress.cli import main
from onnxpress.models.digits_data import CALIBRATION_NPZ

CNN = Path(onnxpress.models.__file__).parent / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("search")
    result = onnxpress.search(CNN, "digits", "top1>=-1pt", folder=folder, objective="size",
                              trials=8, seed=5, calibration=CALIBRATION_NPZ, test="digits",
                              output=folder.parent / "best.onnx")
    return folder, result


def test_the_page_shows_the_front_the_families_and_the_rejected(finished) -> None:
    folder, result = finished
    page = (folder / "report.html").read_text()
    png = (folder / "front.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "data:image/png;base64," in page
    assert result.front and result.chosen == result.front[0]
    for c in result.candidates:
        assert html.escape(c.pipeline) in page
        if c.rejected is not None:
            assert html.escape(c.rejected) in page
        elif not c.holds:
            assert f"{c.value:.4f} against the limit" in page
    for family in ("prune", "lowrank", "quantize"):
        assert f"<td>{family}</td>" in page
    # the chosen model is scored on the test set, and the search wrote it
    assert result.test["chosen"] == pytest.approx(
        onnxpress.evaluate(result.chosen.path, "digits", progress=False).value)
    assert (folder.parent / "best.onnx").read_bytes() == Path(result.chosen.path).read_bytes()


def test_each_family_alone_is_the_cheapest_single_family_candidate(finished) -> None:
    _, result = finished
    space = plan(CNN)
    best = alone(result.candidates, space)
    off = {k.family: k.values[0] for k in space.knobs}
    assert any(c is not None for c in best.values())
    for family, c in best.items():
        single = [o for o in result.candidates if o.holds and o.cost is not None and
                  [f for f, v in o.settings.items() if v != off[f]] == [family]]
        assert (c is None) == (not single)
        if c is not None:
            assert c.cost == min(o.cost for o in single)


def test_compile_reproduces_the_chosen_bytes_from_the_string_and_the_toml(
        finished, tmp_path: Path) -> None:
    folder, result = finished
    want = Path(result.chosen.path).read_bytes()
    pipeline = (folder / "chosen.txt").read_text().strip()
    assert pipeline == result.chosen.pipeline
    by_string, by_toml = tmp_path / "string.onnx", tmp_path / "toml.onnx"
    assert main(["compile", str(CNN), "-o", str(by_string), "--passes", pipeline,
                 "--calibration", str(CALIBRATION_NPZ)]) == 0
    assert main(["compile", str(CNN), "-o", str(by_toml), "--config",
                 str(folder / "chosen.toml")]) == 0
    assert by_string.read_bytes() == want
    assert by_toml.read_bytes() == want


def test_reporting_a_finished_search_again_builds_nothing_and_writes_the_same_page(
        finished, tmp_path: Path, monkeypatch) -> None:
    folder, result = finished
    page = (folder / "report.html").read_bytes()
    import onnxpress.autotune.candidate as candidate
    monkeypatch.setattr(candidate, "compile", lambda *a, **k: pytest.fail("built again"))
    again = onnxpress.search(CNN, "digits", "top1>=-1pt", folder=folder, objective="size",
                             trials=8, seed=5, calibration=CALIBRATION_NPZ, test="digits")
    assert again.candidates == result.candidates
    assert (folder / "report.html").read_bytes() == page
