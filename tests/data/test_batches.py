"""The one batch loader: good files become one stacked tensor in order, bad ones a reason."""

import torch

from mmindex.data.batches import load_pixels
from mmindex.testing import photo


def to_tensor(image):
    return torch.ones(3, 4, 4) * image.width  # marks which image it came from


def test_bad_files_become_reasons_and_good_ones_stay_in_order(tmp_path):
    photo(40, 30, 0).save(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_text("not an image")
    photo(50, 30, 1).save(tmp_path / "b.png")
    paths = [tmp_path / "a.jpg", tmp_path / "broken.jpg", tmp_path / "missing.jpg",
             tmp_path / "b.png"]
    loaded = load_pixels(paths, to_tensor, min_side=16)
    assert [r.ok for r in loaded.results] == [True, False, False, True]
    assert loaded.pixels.shape == (2, 3, 4, 4)
    assert loaded.pixels[:, 0, 0, 0].tolist() == [40, 50]  # a, then b
    reasons = {r.path.rsplit("/", 1)[-1]: r.reason for r in loaded.failures}
    assert "cannot read file" in reasons["missing.jpg"] and reasons["broken.jpg"]


def test_a_batch_with_nothing_usable_has_no_pixels(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    loaded = load_pixels([tmp_path / "empty.png"], to_tensor, min_side=16)
    assert loaded.pixels is None and loaded.failures[0].reason
