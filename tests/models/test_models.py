import numpy as np
import pytest
import torch

from mmindex.errors import ModelError
from mmindex.models import clip, registry


def test_tiny_model_is_deterministic_and_normalised(tiny_encoder):
    again = registry.load_encoder("test-tiny")
    assert again.info.fingerprint == tiny_encoder.info.fingerprint
    texts = tiny_encoder.encode_texts(["a red square", "a blue star"])
    assert texts.shape == (2, 64) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_checkpoint_directory_round_trip(tiny_encoder, tmp_path):
    with torch.no_grad():
        for p in tiny_encoder.model.parameters():
            p.add_(0)  # untouched weights; the point is the file format
    clip.save_checkpoint(tiny_encoder, tmp_path / "ckpt", extra={"note": "test"})
    loaded = registry.load_encoder(str(tmp_path / "ckpt"))
    assert loaded.info.fingerprint == tiny_encoder.info.fingerprint
    assert loaded.info.spec == str((tmp_path / "ckpt").resolve())
    words = ["a photo of a cat"]
    assert np.allclose(loaded.encode_texts(words), tiny_encoder.encode_texts(words), atol=1e-6)


def test_arch_with_local_weights_file(tmp_path):
    registry.register_mmindex_configs()
    import open_clip

    model = open_clip.create_model("mmindex-tiny")
    with torch.no_grad():
        model.logit_scale.fill_(1.234)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    loaded = registry.load_encoder(f"mmindex-tiny:{tmp_path / 'weights.pt'}")
    assert loaded.model.logit_scale.item() == pytest.approx(1.234)


def test_unreachable_hub_is_one_line_with_alternatives(monkeypatch):
    monkeypatch.setattr(clip, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError) as info:
        registry.load_encoder("ViT-B-32:laion2b_s34b_b79k")
    message = str(info.value)
    assert "\n" not in message and "starter" in message and "ViT-B-32:laion2b_s34b_b79k" in message


@pytest.mark.parametrize("spec, words", [
    ("NoSuchArch:random", "unknown architecture"), ("ViT-B-32", "names no weights"),
    ("/no/such/dir/", "not an mmindex checkpoint"), ("mmindex-tiny:/no/file.pt", "does not exist"),
    ("  ", "empty model spec"),
])
def test_bad_specs_are_explained(spec, words):
    with pytest.raises(ModelError, match=words):
        registry.load_encoder(spec)


def test_broken_checkpoint_is_reported(tmp_path, tiny_encoder):
    clip.save_checkpoint(tiny_encoder, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be read"):
        registry.load_encoder(str(tmp_path / "ckpt"))


def test_list_models_names_every_kind():
    specs = [e.spec for e in registry.list_models()]
    assert "starter" in specs and "ViT-B-32:laion2b_s34b_b79k" in specs
    assert any(s.startswith("hf-hub:") for s in specs)


def test_default_falls_back_to_starter_with_a_warning(monkeypatch):
    from mmindex.errors import MmindexWarning

    monkeypatch.setattr(registry, "clip_weights_cached", lambda spec: False)
    with pytest.warns(MmindexWarning, match="--model ViT-B-32"):
        assert registry.default_model_spec() == "starter"
    monkeypatch.setattr(registry, "clip_weights_cached", lambda spec: True)
    assert registry.default_model_spec() == registry.DEFAULT_CLIP


def test_bf16_keeps_the_fingerprint_and_stays_close_to_fp32():
    full = registry.load_encoder("test-tiny", "fp32")
    half = registry.load_encoder("test-tiny", "bf16")
    assert half.info.fingerprint == full.info.fingerprint
    assert half.dtype == torch.bfloat16
    pixels = torch.rand(4, 3, 32, 32)
    a, b = full.encode_images(pixels), half.encode_images(pixels)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)  # normalised in float32
    assert (a * b).sum(1).min() > 0.98


def test_trimmed_text_padding_gives_the_untrimmed_embeddings(tiny_encoder):
    texts = ["a cat", "a much longer sentence about a red bicycle by the canal"]
    with torch.no_grad():
        full = tiny_encoder.model.encode_text(tiny_encoder.tokenizer(texts), normalize=True)
    assert clip._can_trim_padding(tiny_encoder.model)
    assert np.allclose(tiny_encoder.encode_texts(texts), full.numpy(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_encoder_takes_cpu_inputs_and_returns_cpu_embeddings():
    cpu = registry.load_encoder("test-tiny", "fp32")
    gpu = registry.load_encoder("test-tiny", "fp32")
    gpu.model.to("cuda")
    pixels, texts = torch.rand(3, 3, 32, 32), ["a cat", "a red bicycle"]
    assert gpu.device.type == "cuda"
    assert np.allclose(gpu.encode_images(pixels), cpu.encode_images(pixels), atol=1e-4)
    assert np.allclose(gpu.encode_texts(texts), cpu.encode_texts(texts), atol=1e-4)
    tokens = gpu.patch_tokens(pixels)
    assert tokens.device.type == "cpu"
    assert torch.allclose(tokens, cpu.patch_tokens(pixels), atol=1e-4)


def test_a_saved_checkpoint_opens_in_open_clip_itself(tmp_path, tiny_encoder):
    """open_clip's own loader reads the folder (`local-dir:`), and gives the same model."""
    import open_clip
    import torch

    from mmindex.models.clip import load_checkpoint, save_checkpoint

    save_checkpoint(tiny_encoder, tmp_path / "ckpt", {"note": "mmindex metadata stays"})
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'ckpt'}")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        theirs = model.eval().encode_image(images, normalize=True)
        ours = tiny_encoder.model.eval().encode_image(images, normalize=True)
    assert torch.allclose(theirs, ours, atol=1e-5)
    assert load_checkpoint(tmp_path / "ckpt").info.fingerprint == tiny_encoder.info.fingerprint
