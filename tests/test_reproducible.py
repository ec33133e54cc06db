"""Same input + same config = same bytes: ten ``compile --passes int8`` runs of each digits
model write identical files. ``lower-qdq(form=auto)`` used to time its two forms on the
machine, so identical compiles of the digits CNN gave two different files; it is a rule now
(``form=measure`` keeps the timing, and says its bytes depend on the machine)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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


@pytest.mark.parametrize("passes", ["cleanup,lowrank(params=0.8)",
                                    "cleanup,prune(ratio=0.3,importance=activation)"])
def test_the_bytes_do_not_depend_on_the_number_of_blas_threads(passes: str,
                                                               tmp_path: Path) -> None:
    """LAPACK's eigh/cholesky/solve round differently with 1 and 2 BLAS threads (the
    whitened SVD's bytes did); a compile on a 2-core machine and on a 1-core one (or a Ray
    task, which gets one) must write the same file."""
    digests = set()
    for threads in ("1", "2"):
        out = tmp_path / f"{threads}.onnx"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-m", "onnxpress", "compile",
                        str(MODELS / "digits_cnn.onnx"), "-o", str(out), "--passes", passes,
                        "--calibration", str(MODELS / "digits_calibration.npz")],
                       env=env, check=True, capture_output=True)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
