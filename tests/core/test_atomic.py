"""Durable replacement of files and folders: all or nothing, old or new, never neither."""

import pytest

from mmindex.core import atomic, faults


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    atomic.write_atomically(target, "old")
    with faults.REGISTRY.armed("store.write.midway", faults.crash()), \
            pytest.raises(faults.SimulatedCrash):
        atomic.write_atomically(target, "new contents", faults_as="store.write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    atomic.write_atomically(target, "new")
    assert target.read_text() == "new"


def test_a_failed_folder_build_keeps_the_installed_one(tmp_path):
    dest = tmp_path / "llm"
    with atomic.staged_directory(dest) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic.staged_directory(dest) as staging:
        (staging / "weights").write_text("half of v2")
        raise RuntimeError("conversion failed")
    assert (dest / "weights").read_text() == "v1"
    with atomic.staged_directory(dest) as staging:
        (staging / "weights").write_text("v2")
    assert (dest / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["llm"]  # no staging or old copy left


def test_without_replace_an_existing_folder_wins(tmp_path):
    dest = tmp_path / "tower"
    with atomic.staged_directory(dest) as staging:
        (staging / "tower.json").write_text("first")
    with atomic.staged_directory(dest, replace=False) as staging:
        (staging / "tower.json").write_text("second")
    assert (dest / "tower.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["tower"]


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_text("old")
    with pytest.raises(OSError), atomic.atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise OSError("disk full")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    with atomic.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
