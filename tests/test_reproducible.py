"""Same input + same config = same bytes: ten ``compile --passes int8`` runs of each digits
model write identical files. ``lower-qdq(form=auto)`` used to time its two forms on the
machine, so identical compiles of the digits CNN gave two different files; it is a rule now
(``form=measure`` keeps the timing, and says its bytes depend on the machine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from onnxpress.cli import main
from onnxpress.models import HERE as MODELS

RUNS = 10

pytestmark = pytest.mark.slow


# the digits CNN with its Convs quantized too (the preset's cost rule keeps them float): the
# case whose two forms timed within noise of each other
@pytest.mark.parametrize("name, passes", [("digits_cnn", "int8"), ("digits_vit", "int8"),
                                          ("default_cnn", "int8"),
                                          ("digits_cnn", "int8(cost=false)")])
def test_ten_int8_compiles_write_the_same_bytes(name: str, passes: str, tmp_path: Path
                                                ) -> None:
    digests = set()
    for run in range(RUNS):
        out = tmp_path / f"{run}.onnx"
        assert main(["compile", str(MODELS / f"{name}.onnx"), "-o", str(out), "--passes",
                     passes, "--calibration", str(MODELS / "digits_calibration.npz")]) == 0
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
