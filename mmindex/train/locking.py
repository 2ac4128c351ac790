"""Tower locking (LiT): which blocks of a tower freeze, and the optimizer's parameter groups."""

from __future__ import annotations

import re

import torch

from mmindex.errors import UserInputError
from mmindex.train.config import FinetuneConfig

# Parameters after a tower's last stage, by the first name part below the tower (open_clip's
# ViT, ModifiedResNet, text transformer and timm/HF heads). Registration order cannot tell:
# CLIP registers `proj` and `text_projection` on the module itself, before its submodules.
HEAD_NAMES = {"proj", "ln_post", "attnpool", "text_projection", "ln_final", "head", "fc_norm"}


STAGE = re.compile(r"^(.*?(?:(?:resblocks|layers|layer|blocks)\.\d+|layer\d+))\.")


def tower_blocks(model: torch.nn.Module, tower: str) -> list[list[str]]:
    """A tower's parameter names grouped into blocks from input to output.

    The blocks are the repeated stages (`resblocks.K` of a transformer, `layerK` of a
    ResNet); parameters before the first stage (stem, embeddings) form the first group and
    the head (final norm, projection, attention pool) joins the last stage, so unlocking
    the last block always unlocks the head that reads it.
    """
    stem, stages, head = [], {}, []
    for name, _ in model.named_parameters():
        if _tower_of(name) != tower:
            continue
        match = STAGE.match(name)
        if match:
            stages.setdefault(match.group(1), []).append(name)
        elif _first_part(name) in HEAD_NAMES:
            head.append(name)
        else:
            stem.append(name)
    blocks = [stem] + list(stages.values())
    blocks[-1] = blocks[-1] + head
    return [b for b in blocks if b]


def _first_part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] in ("visual", "text") and len(parts) > 1 else parts[0]


def _tower_of(name: str) -> str:
    if name.startswith("visual."):
        return "image"
    if name.startswith("logit_"):
        return "head"
    return "text"  # CLIP keeps its text tower at the top level; CustomTextCLIP under text.


def apply_locks(model: torch.nn.Module, config: FinetuneConfig) -> None:
    """LiT-style locking: freeze a tower except its last `unlock_last` blocks."""
    for tower, locked in (("image", config.lock_image), ("text", config.lock_text)):
        if not locked:
            continue
        blocks = tower_blocks(model, tower)
        n_frozen = max(0, len(blocks) - config.unlock_last)
        frozen = {name for block in blocks[:n_frozen] for name in block}
        for name, param in model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)


def freeze_locked_norm_stats(model: torch.nn.Module) -> None:
    """BatchNorm layers whose weights are frozen keep their running statistics too."""
    for module in model.modules():
        is_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        if is_norm and not any(p.requires_grad for p in module.parameters()):
            module.eval()


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices and kernels only: gains, biases and the logit scale/bias
    (every tensor of fewer than two dimensions) are not pulled towards zero."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name.startswith("logit_") else decay).append(param)
    if not decay and not no_decay:
        raise UserInputError("every parameter is locked; unlock a tower or --unlock-last N")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
