"""Fixtures shared across test folders: the real MiniLM export, made once per session into a
temporary cache (never the user's ``~/.cache``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm-cache")


@pytest.fixture(scope="session")
def minilm_path(minilm_cache: Path) -> Path:
    from onnxpress.models.minilm import minilm_onnx

    return minilm_onnx(minilm_cache)
