"""The other two ways to join an image to a causal LM, beside the projector prefix
(LLaVA, models/projector.py):

    cross-attention  (Flamingo) gated cross-attention blocks before every Nth decoder layer of
                     the frozen LLM; text attends to image features that take no room in
                     the context: each image keeps one marker token, and every text token
                     attends to the image whose marker came last before it
    early            image patches become tokens from the start: a patch embedding with
                     position embeddings, trained from scratch, straight into the LLM's
                     input in the image's slots; no vision tower

Each block starts as the identity: its tanh gates are 0, so the frozen LLM computes exactly
what it computed before, and training opens the gates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FUSIONS = ("prefix", "cross-attention", "early")
PIXEL_MEAN = 0.5  # early fusion reads pixels in [-0.5, 0.5]: no statistics of a tower to match


class PatchEmbed(nn.Module):
    """(M, 3, S, S) pixels -> (M, (S/P)^2, H) tokens: one linear map per P x P patch (a strided
    convolution) plus a learned position embedding per patch."""

    def __init__(self, image_size: int, patch_size: int, width: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image side {image_size} is not a multiple of patch {patch_size}")
        self.patches = (image_size // patch_size) ** 2
        self.embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(self.patches, width) * 0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(pixels).flatten(2).transpose(1, 2)  # (M, N, H)
        return tokens + self.position.to(tokens.dtype)


class Resampler(nn.Module):
    """Perceiver resampler, one block: `latents` learned queries attend to an image's tokens,
    so every image costs the cross-attention the same number of keys."""

    def __init__(self, latents: int, width: int, heads: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.02)
        self.attend = Attention(width, heads)
        self.norm = nn.LayerNorm(width)
        self.feed = FeedForward(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (M, T, H) -> (M, L, H)
        queries = self.latents.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        keys = torch.cat([tokens, queries], dim=1)  # Flamingo: latents attend to themselves too
        latents = queries + self.attend(queries, self.norm(keys))
        return latents + self.feed(latents)


class Attention(nn.Module):
    """Multi-head attention of queries (B, L, H) over keys (B, K, H); `allowed` (B, L, K)
    masks keys per query, and a query with no allowed key gets a zero output."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width, bias=False)
        self.key_value = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, keys: torch.Tensor,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        b, length, width = x.shape
        q = self.query(x).view(b, length, self.heads, -1).transpose(1, 2)  # (B, h, L, d)
        k, v = self.key_value(keys).view(b, keys.shape[1], 2, self.heads, -1).permute(
            2, 0, 3, 1, 4)  # each (B, h, K, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, L, K)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(v.dtype)
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, width))


class FeedForward(nn.Sequential):
    def __init__(self, width: int, factor: int = 4):
        super().__init__(nn.LayerNorm(width), nn.Linear(width, factor * width), nn.GELU(),
                         nn.Linear(factor * width, width))


class GatedCrossAttention(nn.Module):
    """x + tanh(a) * attend(x, its image); then x + tanh(f) * ff(x). a = f = 0 at the start."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attend = Attention(width, heads)
        self.feed = FeedForward(width)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, images: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        """x (B, L, H); images (M, T, H), every image of the batch; media (B, L): the image
        each token attends to, -1 for none."""
        b, length, _ = x.shape
        keys = images.reshape(1, -1, images.shape[-1]).expand(b, -1, -1)  # (B, M*T, H)
        owner = torch.arange(images.shape[0], device=x.device).repeat_interleave(
            images.shape[1])  # (M*T,) the image of each key
        allowed = media[:, :, None] == owner[None, None, :]  # (B, L, M*T)
        attended = self.attend(self.norm(x), keys.to(x.dtype), allowed)
        x = x + torch.tanh(self.attn_gate).to(x.dtype) * attended
        return x + torch.tanh(self.ff_gate).to(x.dtype) * self.feed(x)


def media_index(image_mask: torch.Tensor, first_image: torch.Tensor) -> torch.Tensor:
    """(B, L) image each token attends to: the last image whose marker is at or before it,
    numbered across the batch (row b's images start at first_image[b]); -1 before any."""
    seen = image_mask.long().cumsum(dim=1)  # (B, L) markers so far in the row
    return torch.where(seen > 0, seen - 1 + first_image[:, None], torch.full_like(seen, -1))


class CrossAttentionLayers(nn.Module):
    """Gated cross-attention blocks run before every `every`-th decoder layer of an LLM,
    through forward pre-hooks: the LLM's own modules and weights stay as they were. The
    images of the current forward pass are set with `context`."""

    def __init__(self, decoder_layers, every: int, width: int, heads: int):
        super().__init__()
        places = list(range(0, len(decoder_layers), every))
        self.blocks = nn.ModuleList(GatedCrossAttention(width, heads) for _ in places)
        self.images: torch.Tensor | None = None  # (M, T, H)
        self.media: torch.Tensor | None = None  # (B, L)
        for block, place in zip(self.blocks, places):
            decoder_layers[place].register_forward_pre_hook(self._hook(block), with_kwargs=True)

    def context(self, images: torch.Tensor | None, media: torch.Tensor | None) -> None:
        self.images, self.media = images, media

    def _hook(self, block: GatedCrossAttention):
        def before_layer(module, args, kwargs):
            if self.images is None or self.images.shape[0] == 0:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            media = self.media
            if hidden.shape[1] != media.shape[1]:  # generating: one new token a step, after
                media = media[:, -1:].expand(-1, hidden.shape[1])  # every image of the prompt
            hidden = block(hidden, self.images, media)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return before_layer
