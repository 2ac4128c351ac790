"""Exported models (models/exported.py): the same ids, pixels and embeddings as the torch
model, a cache that repairs itself, and ingest and search that run without torch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmindex import IngestConfig, ingest, open_index
from mmindex.data.preprocess import ResizeCropNormalise
from mmindex.models import exported
from mmindex.models.clip import _bpe_tokenizer
from mmindex.models.exported import clean_lower
from mmindex.models.registry import load_encoder, load_for_inference
from mmindex.testing import TINY, photo

AWKWARD = ["a photo of a cat", "A RED bicycle, parked near the café!!", "naïve résumé 東京 🚲",
           "x" * 500, "it's they're we've I'm you'll he'd", "numbers 12345 and 3.14", "",
           "   spaces   everywhere  ", "hello <end_of_text> world", "tab\tnew\nline",
           "word " * 100, "Tom &amp; Jerry &lt;3", "mojibake: cafÃ©", "UPPER lower MiXeD"]


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TINY)


@pytest.fixture(scope="module")
def tiny_exported(tiny, tmp_path_factory):
    """One export for the module (writing one takes seconds)."""
    cache = tmp_path_factory.mktemp("export-cache")
    previous = os.environ.get("MMINDEX_CACHE")
    os.environ["MMINDEX_CACHE"] = str(cache)
    try:
        assert exported.save(tiny) == cache / "onnx" / tiny.info.fingerprint
        yield cache
    finally:
        os.environ["MMINDEX_CACHE"] = previous or ""


def test_tokenizer_gives_open_clip_ids(tiny):
    ours = _bpe_tokenizer(tiny.tokenizer)
    ours.enable_truncation(tiny.tokenizer.context_length)
    for text in AWKWARD:
        theirs = tiny.tokenizer([text])[0]
        assert ours.encode(clean_lower(text)).ids == theirs[theirs != 0].tolist(), text


def test_clean_lower_is_open_clips(tiny):
    assert [clean_lower(t) for t in AWKWARD] == [tiny.tokenizer.clean_fn(t) for t in AWKWARD]


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (225, 1001), (100, 50), (31, 31),
                                  (32, 32), (3000, 17)])
def test_numpy_preprocessing_is_open_clips(tiny, size):
    from mmindex.models.clip import _plain_preprocess

    image = Image.fromarray(np.random.default_rng(sum(size)).integers(
        0, 255, (size[1], size[0], 3), dtype=np.uint8))
    ours = _plain_preprocess(tiny._preprocess)
    assert isinstance(ours, ResizeCropNormalise)
    np.testing.assert_allclose(ours(image), tiny.preprocess(image).numpy(), atol=1e-6)


def test_exported_model_embeds_as_the_torch_model(tiny, tiny_exported, monkeypatch):
    import torch

    monkeypatch.setenv("MMINDEX_CACHE", str(tiny_exported))
    onnx = exported.load(tiny.info.fingerprint)
    assert onnx is not None and onnx.info == tiny.info and not hasattr(onnx, "model")
    assert _cosines(onnx.encode_texts(AWKWARD), tiny.encode_texts(AWKWARD)).min() >= 0.999
    np.testing.assert_allclose(onnx.encode_texts(AWKWARD), tiny.encode_texts(AWKWARD),
                               atol=1e-5)
    images = [photo(64 + 7 * i, 48, seed=i) for i in range(5)] + [_noise(40, 90)]
    ours = onnx.encode_images(np.stack([onnx.preprocess(im) for im in images]))
    theirs = tiny.encode_images(torch.stack([tiny.preprocess(im) for im in images]))
    assert _cosines(ours, theirs).min() >= 0.999
    assert onnx.encode_texts([]).shape == (0, tiny.info.dim)


def test_int8_stays_close_and_is_made_once(tiny, tiny_exported, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tiny_exported))
    int8 = exported.load(tiny.info.fingerprint, precision="int8")
    assert _cosines(int8.encode_texts(AWKWARD), tiny.encode_texts(AWKWARD)).min() >= 0.99
    made = sorted(p.name for p in (tiny_exported / "onnx" / tiny.info.fingerprint).iterdir())
    assert "text.int8.onnx" in made and "image.int8.onnx" not in made  # on first use only


def test_load_for_inference_exports_once_then_skips_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    first = load_for_inference(TINY, precision="fp32")
    assert type(first).__name__ == "ExportedClip"
    probe = ("import sys; from mmindex.models.registry import load_for_inference; "
             f"e = load_for_inference({TINY!r}); print(type(e).__name__, e.info.fingerprint); "
             "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))")
    out = _lines_printed_by(probe)
    assert out == [f"ExportedClip {first.info.fingerprint}", "[]"]


def test_an_export_made_by_a_search_serves_the_next_ingest(tiny, tmp_path, monkeypatch):
    """The export exists (a search wrote it) but no spec shortcut does: the ingest loads
    torch once to learn the fingerprint, then runs the export, not the torch model."""
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    assert exported.save(tiny) is not None and not (tmp_path / "onnx" / "specs").exists()
    assert type(load_for_inference(TINY, precision="fp32")).__name__ == "ExportedClip"


def test_bf16_and_the_torch_runtime_stay_in_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    assert hasattr(load_for_inference(TINY, precision="bf16"), "model")
    monkeypatch.setenv("MMINDEX_RUNTIME", "torch")
    assert hasattr(load_for_inference(TINY, precision="fp32"), "model")
    assert not (tmp_path / "onnx").exists()
    from mmindex.errors import UserInputError

    with pytest.raises(UserInputError, match="int8 runs in ONNX Runtime"):
        load_for_inference(TINY, precision="int8")
    with pytest.raises(UserInputError, match="fp16"):
        load_for_inference(TINY, precision="fp16")


def test_damaged_or_foreign_exports_are_rewritten(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    directory = exported.save(tiny)
    (directory / "text.onnx").write_bytes(b"not an onnx graph")
    broken = exported.load(tiny.info.fingerprint)  # sessions open lazily: the load succeeds
    with pytest.raises(Exception):
        broken.encode_texts(["a cat"])
    (directory / "export.json").write_text("{not json")
    with pytest.warns(UserWarning, match="discarding the exported model"):
        assert exported.load(tiny.info.fingerprint) is None
    assert not directory.exists()  # deleted, so the next torch load writes it again
    assert exported.save(tiny) == directory and exported.load(tiny.info.fingerprint)
    # an export of another format is replaced the same way, without a warning
    meta = json.loads((directory / "export.json").read_text())
    (directory / "export.json").write_text(json.dumps({**meta, "format": 0}))
    assert exported.load(tiny.info.fingerprint) is None and not directory.exists()


def test_a_bf16_model_is_not_exported_and_says_nothing(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    bf16 = load_encoder(TINY, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ingest in bf16 must not warn about this
        assert exported.save(bf16) is None
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())


def test_only_the_most_recently_used_exports_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    for age, name in enumerate(["newest", "older", "oldest", "ancient"]):  # other models
        (tmp_path / "onnx" / name).mkdir(parents=True)
        meta = tmp_path / "onnx" / name / "export.json"
        meta.write_text("{}")
        os.utime(meta, (1e9 - age * 100, 1e9 - age * 100))
    assert exported.evict(keep=2) == [tmp_path / "onnx" / "oldest", tmp_path / "onnx" / "ancient"]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["newest", "older"]


def test_ingest_and_search_run_without_torch_once_exported(tmp_path, monkeypatch):
    import ast

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    photos, index_dir = tmp_path / "photos", tmp_path / "idx"
    photos.mkdir()
    for i in range(3):
        photo(64, 48, seed=i).save(photos / f"p{i}.jpg")
    ingest(IngestConfig(roots=(photos,), index_dir=index_dir, model=TINY))  # exports
    photo(50, 70, seed=9).save(photos / "p9.jpg")
    # a new process ingests the new photo and searches: neither imports torch
    probe = ("import sys; from mmindex import IngestConfig, ingest, open_index; "
             f"ingest(IngestConfig(roots=({str(photos)!r},), index_dir={str(index_dir)!r})); "
             f"hits = open_index({str(index_dir)!r}).search('a photo', k=4); "
             "print([(h.id, h.score) for h in hits]); "
             "print(sorted(m for m in ('torch', 'open_clip', 'timm', 'torchvision') "
             "if m in sys.modules))")
    out = _lines_printed_by(probe)
    assert out[-1] == "[]"
    reference = open_index(index_dir)
    reference._query_encoder = reference.encoder  # the torch model
    expected = reference.search("a photo", k=4)
    hits = ast.literal_eval(out[-2])
    assert [h[0] for h in hits] == [h.id for h in expected] and len(hits) == 4
    np.testing.assert_allclose([h[1] for h in hits], [h.score for h in expected], atol=1e-4)
    # and the command a user types, `mmindex search`, loads no torch either
    cli = ("import sys; from mmindex.cli import app\n"
           f"sys.argv = ['mmindex', 'search', 'a photo', '--index', {str(index_dir)!r}, '--json']\n"
           "try:\n    app()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
           "print(sorted(m for m in ('torch', 'open_clip', 'torchvision', 'pandas') "
           "if m in sys.modules))")
    out = _lines_printed_by(cli)
    assert out[-1] == "[]" and str(expected[0].path) in "\n".join(out)


def _lines_printed_by(code: str) -> list[str]:
    """Run Python code in a new process (a cold start, as a user's command is)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(7).integers(0, 255, (height, width, 3),
                                                             dtype=np.uint8))
