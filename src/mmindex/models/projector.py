"""The projector: vision tokens (width C) -> LLM input embeddings (width H), from a string spec.

    linear          one Linear(C, H)
    mlpNx_gelu      N Linear layers with GELU between them (LLaVA-1.5 uses mlp2x_gelu)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmindex.errors import UserInputError

PROJECTOR_SPECS = ("linear", "mlp2x_gelu")
_MLP = re.compile(r"^mlp(\d+)x_gelu$")


@dataclass(frozen=True)
class ProjectorConfig:
    spec: str  # "linear" | "mlpNx_gelu"
    vision_dim: int  # C: width of the vision tower's tokens
    llm_dim: int  # H: the LLM's hidden size


def build_projector(config: ProjectorConfig):
    """A module mapping (..., C) -> (..., H)."""
    from torch import nn

    depth = _depth(config.spec)
    layers = [nn.Linear(config.vision_dim, config.llm_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(config.llm_dim, config.llm_dim)]
    return layers[0] if depth == 1 else nn.Sequential(*layers)


def _depth(spec: str) -> int:
    if spec == "linear":
        return 1
    match = _MLP.match(spec)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise UserInputError(f"unknown projector {spec!r}; use one of {', '.join(PROJECTOR_SPECS)} "
                         "(or mlpNx_gelu for N layers)")
