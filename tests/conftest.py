"""Shared fixtures: the awkward files real photo folders hold, and a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmindex.testing import TINY, make_awkward_folder, photo


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory):
    """Exported models (models/exported.py) go to a folder of this run, not the
    user's cache; subprocesses started by tests inherit it."""
    import os

    folder = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("MMINDEX_CACHE")
    os.environ["MMINDEX_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MMINDEX_CACHE", None)
    else:
        os.environ["MMINDEX_CACHE"] = previous


@pytest.fixture
def awkward_folder(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "photos"
    return folder, make_awkward_folder(folder)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Six distinct photos in two sub-folders."""
    folder = tmp_path / "album"
    for i in range(6):
        sub = folder / ("2024" if i % 2 else "2023")
        sub.mkdir(parents=True, exist_ok=True)
        photo(60 + 20 * i, 50, 100 + i).save(sub / f"photo{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder():
    from mmindex.models.registry import load_encoder

    return load_encoder(TINY)
