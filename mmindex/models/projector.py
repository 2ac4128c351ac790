"""The projector: vision tokens (width C) -> LLM input embeddings (width H), from a string spec.

    linear          one Linear(C, H)
    mlpNx_gelu      N Linear layers with GELU between them (LLaVA-1.5 uses mlp2x_gelu)

With `positions` > 0 a learned embedding per token position (zero at the start) is added to
the vision tokens first, trained with the projector for the questions at hand. A ViT's
tokens and a ResNet's last stage (with its attention pool's position embeddings) carry
their place in the image already, learned for CLIP's objective; an earlier ResNet stage
(`--vision-layer -2`) carries none, and the LLM can tell its tokens apart only by order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from mmindex.errors import UserInputError

PROJECTOR_SPECS = ("linear", "mlp2x_gelu")
_MLP = re.compile(r"^mlp(\d+)x_gelu$")


@dataclass(frozen=True)
class ProjectorConfig:
    spec: str  # "linear" | "mlpNx_gelu"
    vision_dim: int  # C: width of the vision tower's tokens
    llm_dim: int  # H: the LLM's hidden size
    positions: int = 0  # T: learn an embedding for each of T token positions (0: none)


def build_projector(config: ProjectorConfig):
    """A module mapping (..., C) -> (..., H); (..., T, C) -> (..., T, H) with positions."""
    depth = _depth(config.spec)
    layers = [nn.Linear(config.vision_dim, config.llm_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(config.llm_dim, config.llm_dim)]
    projector = layers[0] if depth == 1 else nn.Sequential(*layers)
    return WithPositions(projector, config.positions, config.vision_dim) \
        if config.positions else projector


class WithPositions(nn.Module):
    """Adds a learned (T, C) position embedding to (..., T, C) tokens, then projects them."""

    def __init__(self, projector: nn.Module, positions: int, width: int):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(positions, width))
        self.project = projector

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(tokens + self.position.to(tokens.dtype))


def _depth(spec: str) -> int:
    if spec == "linear":
        return 1
    match = _MLP.match(spec)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise UserInputError(f"unknown projector {spec!r}; use one of {', '.join(PROJECTOR_SPECS)} "
                         "(or mlpNx_gelu for N layers)")
