"""Projector specs and the vision tokens they project (ViT patch tokens, ResNet feature maps)."""

import pytest
import torch

from mmindex.errors import UserInputError
from mmindex.models.projector import ProjectorConfig, build_projector

TINY_RN = {  # a ModifiedResNet tower: 64 px -> a 2x2 feature map of 32*32 = 1024 channels
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "head_width": 64},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.parametrize("spec, linears", [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_specs_map_vision_width_to_llm_width(spec, linears):
    projector = build_projector(ProjectorConfig(spec, vision_dim=12, llm_dim=20))
    out = projector(torch.randn(2, 5, 12))
    assert out.shape == (2, 5, 20)
    assert sum(isinstance(m, torch.nn.Linear) for m in projector.modules()) == linears


def test_token_positions_tell_identical_tokens_apart_once_learned():
    projector = build_projector(ProjectorConfig("mlp2x_gelu", 12, 20, positions=3))
    same = torch.randn(12).expand(2, 3, 12)  # one token repeated at three positions
    out = projector(same)
    torch.testing.assert_close(out[:, 0], out[:, 2])  # zero at the start: the plain projector
    with torch.no_grad():
        projector.position.normal_()
    out = projector(same)
    assert out.shape == (2, 3, 20) and not torch.allclose(out[:, 0], out[:, 2])
    with pytest.raises(RuntimeError):  # another token count than it was built for
        projector(torch.randn(2, 4, 12))


@pytest.mark.parametrize("spec", ["mlp", "mlp0x_gelu", "conv", ""])
def test_unknown_projector_spec_is_a_user_error(spec):
    with pytest.raises(UserInputError, match="unknown projector"):
        build_projector(ProjectorConfig(spec, 4, 4))


def test_vit_patch_tokens_and_pooling(tiny_encoder):
    pixels = torch.randn(3, 3, 32, 32)
    tokens = tiny_encoder.patch_tokens(pixels)  # 32 px / patch 8 -> 4x4 patches
    assert tokens.shape == (3, 16, 64) and tokens.dtype == torch.float32
    pooled = tiny_encoder.patch_tokens(pixels, tokens=4)
    assert pooled.shape == (3, 4, 64)
    # 2x2 grid pooling: the first pooled token averages the top-left 2x2 patches
    grid = tokens.reshape(3, 4, 4, 64)
    torch.testing.assert_close(pooled[:, 0], grid[:, :2, :2].mean(dim=(1, 2)))
    assert tiny_encoder.patch_tokens(pixels, tokens=3).shape == (3, 3, 64)  # not square: 1-D


def test_resnet_tokens_are_the_last_feature_map_plus_positions():
    from mmindex.models.clip import build_from_config

    encoder = build_from_config(TINY_RN, "rn-test", "rn-test")
    pixels = torch.randn(2, 3, 64, 64)
    tokens = encoder.patch_tokens(pixels)
    assert tokens.shape == (2, 4, 1024)
    visual = encoder.model.visual
    with torch.no_grad():
        x = pixels
        for stage in (visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = stage(x)
    expected = x.flatten(2).transpose(1, 2) + visual.attnpool.positional_embedding[1:]
    torch.testing.assert_close(tokens, expected)
    assert encoder.patch_tokens(pixels, tokens=1).shape == (2, 1, 1024)


def test_resnet_earlier_stage_is_a_finer_grid_without_positions():
    from mmindex.models.clip import build_from_config

    encoder = build_from_config(TINY_RN, "rn-test", "rn-test")
    pixels = torch.randn(2, 3, 64, 64)
    tokens = encoder.patch_tokens(pixels, layer=-2)  # layer3: 4x4 cells of 16*32 channels
    assert tokens.shape == (2, 16, 512)
    visual = encoder.model.visual
    with torch.no_grad():
        x = pixels
        for stage in (visual.stem, visual.layer1, visual.layer2, visual.layer3):
            x = stage(x)
    torch.testing.assert_close(tokens, x.flatten(2).transpose(1, 2))
    assert encoder.patch_tokens(pixels, tokens=4, layer=-2).shape == (2, 4, 512)


def test_vit_layers_are_its_blocks_after_the_final_norm(tiny_encoder):
    visual = tiny_encoder.model.visual
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = visual._embeds(pixels)
        blocks = [hidden := block(hidden) for block in visual.transformer.resblocks]
    for layer in (-1, -2):
        expected = visual.ln_post(blocks[layer])[:, 1:]  # without the class token
        torch.testing.assert_close(tiny_encoder.patch_tokens(pixels, layer=layer), expected)


@pytest.mark.parametrize("layer", [0, -3, 2])
def test_a_vision_layer_the_tower_lacks_is_a_user_error(tiny_encoder, layer):
    with pytest.raises(UserInputError, match=f"vision layer {layer} does not exist"):
        tiny_encoder.patch_tokens(torch.randn(1, 3, 32, 32), layer=layer)
