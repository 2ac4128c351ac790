"""The three ways to join images to the LLM, with a tiny random Llama and tiny images: tensor
shapes, the zero-gate start, Flamingo's masks over several images, save/load, refusals."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("transformers")
import torch

from mmindex.errors import ModelMismatchError, UserInputError
from mmindex.models.fusion import GatedCrossAttention, PatchEmbed, Resampler, media_index
from mmindex.models.vlm import Vlm, VlmConfig, build_example, collate, load_vlm, save_vlm
from mmindex.testing import build_test_tiny_llm

T, C = 4, 24  # vision tokens per image, vision width


@pytest.fixture
def llm():
    return build_test_tiny_llm()  # each test its own: cross-attention hooks its layers


def make(llm, fusion: str, **extra) -> Vlm:
    config = VlmConfig("mlp2x_gelu", C, llm.hidden_size, T, "test-vision", "vision-fp",
                       llm.name, llm.fingerprint, fusion=fusion, **extra)
    torch.manual_seed(0)
    return Vlm(config, llm)


def batch_of(vlm, questions_images, answer=None):
    examples = [build_example(vlm.tokenizer, q, list(images), vlm.slots, answer)
                for q, images in questions_images]
    return collate(examples, vlm.tokenizer.pad_token_id, left_pad=answer is None)


def inputs(vlm, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if vlm.config.fusion == "early":
        side = vlm.config.image_size
        return torch.rand(n, 3, side, side, generator=generator) - 0.5  # (n, 3, S, S)
    return torch.randn(n, T, C, generator=generator)  # (n, T, C)


def test_patch_embed_and_resampler_shapes():
    tokens = PatchEmbed(32, 8, 64)(torch.rand(5, 3, 32, 32))
    assert tokens.shape == (5, 16, 64)
    assert Resampler(3, 64, 4)(tokens).shape == (5, 3, 64)
    with pytest.raises(ValueError, match="multiple"):
        PatchEmbed(30, 8, 64)


def test_media_index_points_each_token_at_the_last_image_before_it():
    mask = torch.tensor([[0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    first = torch.tensor([0, 2])  # row 0 holds images 0 and 1, row 1 image 2
    assert media_index(mask, first).tolist() == [[-1, 0, 0, 0, 1, 1], [-1, -1, -1, 2, 2, 2]]


def test_a_token_attends_only_to_its_own_image():
    torch.manual_seed(0)
    block = GatedCrossAttention(16, 2)
    with torch.no_grad():
        block.attn_gate.fill_(1.0)
    images = torch.randn(2, 3, 16)  # (M, T, H)
    x = torch.randn(1, 4, 16)
    media = torch.tensor([[-1, 0, 1, 1]])
    out = block(x, images, media)
    changed = block(x, images + torch.tensor([0.0, 1.0])[:, None, None].expand(2, 3, 16), media)
    # moving image 1 changes only the tokens that attend to it, never the one on image 0
    assert torch.allclose(out[:, :2], changed[:, :2]) and not torch.allclose(out[:, 2:],
                                                                              changed[:, 2:])


@pytest.mark.parametrize("fusion,slots", [("prefix", T), ("cross-attention", 1),
                                          ("early", 16)])
def test_slots_per_image_and_the_loss_backward(llm, fusion, slots):
    vlm = make(llm, fusion, image_size=32, patch_size=8)
    assert vlm.slots == slots
    batch = batch_of(vlm, [("What colour?", [0]), ("[two] which?", [1, 2])], answer="red")
    assert int(batch.image_mask.sum()) == 3 * slots
    loss = vlm.loss(batch, inputs(vlm, 3))
    loss.backward()
    trained = [n for n, p in vlm.named_parameters() if p.grad is not None]
    assert trained and all(not n.startswith("llm.") for n in trained)  # the LLM stays frozen
    if fusion == "cross-attention":
        assert any(n.startswith("cross.") for n in trained)


def test_cross_attention_starts_as_the_plain_llm(llm):
    """The tanh gates start at 0: with images attached, the logits are the LLM's own."""
    vlm = make(llm, "cross-attention", cross_every=1)
    batch = batch_of(vlm, [("What colour is it?", [0])])
    embeds = vlm.embed(batch, inputs(vlm, 1))
    with torch.no_grad():
        with_images = vlm.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
        vlm._forget_images()
        plain = vlm.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
        for block in vlm.cross.blocks:
            block.attn_gate.fill_(0.5)
        vlm.embed(batch, inputs(vlm, 1))
        opened = vlm.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    assert torch.equal(with_images, plain) and not torch.allclose(opened, plain)


def test_cross_attention_generation_sees_the_images(llm):
    vlm = make(llm, "cross-attention", cross_every=1, latents=2)
    for block in vlm.cross.blocks:
        block.attn_gate.data.fill_(3.0)
    batch = batch_of(vlm, [("Describe.", [0])])
    features = inputs(vlm, 2)
    first = vlm.generate(batch, features[:1], max_new_tokens=6)
    other = vlm.generate(batch, features[1:] * 5, max_new_tokens=6)
    assert first == vlm.generate(batch, features[:1], max_new_tokens=6)  # greedy, repeatable
    assert first != other  # the image reached every generated token
    assert vlm.cross.images is None  # nothing of this prompt is left for the next one


@pytest.mark.parametrize("fusion", ["cross-attention", "early"])
def test_save_load_and_refusals(llm, fusion, tmp_path):
    vlm = make(llm, fusion, image_size=32, patch_size=8, latents=2)
    with torch.no_grad():
        for parameter in vlm.projector.parameters():
            parameter.add_(0.1)
    save_vlm(vlm, tmp_path / "ckpt")
    fresh = build_test_tiny_llm()
    loaded = load_vlm(tmp_path / "ckpt", fresh, "another-vision-fp" if fusion == "early"
                      else "vision-fp")  # early fusion has no vision tower to match
    assert loaded.config == vlm.config
    for (name, a), b in zip(vlm.trainable_state().items(), loaded.trainable_state().values()):
        assert torch.equal(a, b), name
    other = Vlm(dataclasses.replace(vlm.config, fusion="prefix"), build_test_tiny_llm())
    with pytest.raises(ModelMismatchError):
        from mmindex.models.vlm import load_trained_state

        load_trained_state(other, vlm.trainable_state(), tmp_path / "ckpt")


def test_an_unknown_fusion_is_refused(llm):
    with pytest.raises(UserInputError, match="--fusion"):
        make(llm, "late")
