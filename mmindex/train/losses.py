"""Contrastive losses over paired image and text features: pure functions, no state.

Both losses take L2-normalised features whose row i of each side forms a positive pair, and
the logit scale as a multiplier (already exponentiated: the model stores its logarithm so it
stays positive). Distributed training first gathers the features of every worker with
`gather_features` and then calls the same loss, so the maths never knows about workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of the image→text and text→image cross-entropies.

    image_features (N, D), text_features (N, D); returns a scalar.
    """
    _check_pairs(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T  # (N, N) image i vs text j
    targets = torch.arange(len(logits), device=logits.device)  # (N,) the diagonal
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every (image, text) cell is its own binary decision.

    The sum over all N² cells is divided by N, as in the paper, so the loss does not shrink
    as the batch grows. image_features (N, D), text_features (N, D); returns a scalar.
    """
    _check_pairs(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (N, N)
    signs = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1  # (N, N) ±1
    return -F.logsigmoid(signs * logits).sum() / len(logits)


LOSSES = {"clip": clip_loss, "siglip": siglip_loss}


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Every worker's features, concatenated in rank order: (world_size * N, D).

    `all_gather` returns copies without a gradient, so the local slice is put back as the
    original tensor: gradients flow into this worker's own features, and the data-parallel
    gradient averaging adds up the other workers' contributions.
    """
    import torch.distributed as dist

    if world_size == 1:
        return features
    gathered = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(gathered, features.contiguous())
    gathered[rank] = features
    return torch.cat(gathered)  # (world_size * N, D)


def _check_pairs(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"expected two (N, D) feature tensors of one shape, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
