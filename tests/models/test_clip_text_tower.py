"""The cached text side of a CLIP (models/text_tower.py): the same ids and the same
embeddings as the full model, without importing open_clip at search time."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mmindex.testing import TINY
from mmindex import IngestConfig, ingest, open_index
from mmindex.models import text_tower
from mmindex.models.clip import _bpe_tokenizer, clean_lower
from mmindex.models.registry import load_encoder

AWKWARD = ["a photo of a cat", "A RED bicycle, parked near the café!!", "naïve résumé 東京 🚲",
           "x" * 500, "it's they're we've I'm you'll he'd", "numbers 12345 and 3.14", "",
           "   spaces   everywhere  ", "hello <end_of_text> world", "tab\tnew\nline",
           "word " * 100, "Tom &amp; Jerry &lt;3", "mojibake: cafÃ©", "UPPER lower MiXeD"]


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TINY)


def test_tokenizer_gives_open_clip_ids(tiny):
    ours = _bpe_tokenizer(tiny.tokenizer)
    ours.enable_truncation(tiny.tokenizer.context_length)
    for text in AWKWARD:
        theirs = tiny.tokenizer([text])[0]
        assert ours.encode(clean_lower(text)).ids == theirs[theirs != 0].tolist(), text


def test_clean_lower_is_open_clips(tiny):
    assert [clean_lower(t) for t in AWKWARD] == [tiny.tokenizer.clean_fn(t) for t in AWKWARD]


def test_tower_embeds_as_the_full_model(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    assert text_tower.save(tiny) is not None
    tower = text_tower.load(tiny.info.fingerprint)
    assert tower is not None and tower.info == tiny.info and not hasattr(tower, "model")
    np.testing.assert_allclose(tower.encode_texts(AWKWARD), tiny.encode_texts(AWKWARD),
                               atol=1e-5)
    assert tower.encode_texts([]).shape == (0, tiny.info.dim)


def test_damaged_or_foreign_towers_fall_back_to_the_full_model(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    directory = text_tower.save(tiny)
    (directory / "text.pt").write_bytes(b"not a torchscript archive")
    with pytest.warns(UserWarning, match="discarding the cached text model"):
        assert text_tower.load(tiny.info.fingerprint) is None
    assert not directory.exists()  # deleted, so the next full-model search writes it again
    assert text_tower.save(tiny) == directory and text_tower.load(tiny.info.fingerprint)
    # a tower written by another torch is replaced the same way, without a warning
    meta = json.loads((directory / "tower.json").read_text())
    (directory / "tower.json").write_text(json.dumps({**meta, "torch": "0.0.1"}))
    assert text_tower.load(tiny.info.fingerprint) is None and not directory.exists()
    text_tower.save(tiny)
    monkeypatch.setenv("MMINDEX_TEXT_TOWER", "0")
    assert text_tower.load(tiny.info.fingerprint) is None


def test_ingest_caches_the_tower_and_search_uses_it_without_open_clip(tmp_path, monkeypatch):
    from mmindex.testing import photo

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        photo(64, 48, seed=i).save(photos / f"p{i}.jpg")
    ingest(IngestConfig(roots=(photos,), index_dir=tmp_path / "idx", model=TINY,
                        precision="fp32"))
    full = open_index(tmp_path / "idx")
    expected = [(h.id, round(h.score, 4)) for h in full.search("a photo", k=3)]
    assert full._encoder is None and full._text_encoder is not None  # the tower answered
    # A new process: text search must not import open_clip, timm or torchvision
    probe = ("import sys; from mmindex import open_index; "
             f"hits = open_index({str(tmp_path / 'idx')!r}).search('a photo', k=3); "
             "print([(h.id, round(h.score, 4)) for h in hits]); "
             "print(sorted(m for m in ('open_clip', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[-1] == "[]" and out[-2] == str(expected)


def test_a_bf16_model_is_not_exported_and_says_nothing(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    bf16 = load_encoder(TINY, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ingest in bf16 must not warn about this
        assert text_tower.save(bf16) is None
    assert not (tmp_path / "text-towers").exists() or not any((tmp_path / "text-towers").iterdir())


def test_only_the_most_recently_used_towers_are_kept(tiny, tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    monkeypatch.setattr(text_tower, "KEEP", 2)
    for age, name in enumerate(["newest", "older", "oldest"]):  # stand-ins for other models
        (tmp_path / "text-towers" / name).mkdir(parents=True)
        meta = tmp_path / "text-towers" / name / "tower.json"
        meta.write_text("{}")
        os.utime(meta, (1e9 - age * 100, 1e9 - age * 100))
    mine = text_tower.save(tiny)  # the newest of all: two kept, itself and "newest"
    assert sorted(p.name for p in (tmp_path / "text-towers").iterdir()) == sorted(
        [mine.name, "newest"])
    os.utime(mine / "tower.json", (1, 1))  # long unused, until a search loads it again
    assert text_tower.load(tiny.info.fingerprint) is not None
    assert text_tower.evict(keep=1) == [tmp_path / "text-towers" / "newest"]
