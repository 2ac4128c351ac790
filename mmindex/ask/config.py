"""What one `ask` is given: plain data, light to import (the CLI takes its defaults from it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AskConfig:
    k: int = 3
    where: str | None = None
    threshold: float | None = None  # None: the index's calibrated threshold
    max_new_tokens: int = 48
    # False: each retrieved image answers alone, one line each ("[1] yellow"). The shapes
    # projector was trained on one image per prompt, and three images in one prompt made it
    # answer "there is none" about a star that all three showed (docs/ask.md, session 7).
    # True: one prompt holds all k images, each after its tag.
    joint: bool = False
    texts: int = 2  # passages of the index's texts given as evidence, when they pass
    text_threshold: float | None = None  # None: the image threshold
    # How passages are ranked: None as search's default (vector under a threshold, else
    # hybrid); "lexical" or "hybrid" rank by BM25 (fused) and keep every passage that
    # shares a word with the question, since a cosine threshold cannot gate their scores;
    # "vector" ranks by cosine under the threshold. Identifiers and amounts need lexical
    # (docs/documents.md).
    passage_mode: str | None = None
    # Tiles of a large image shown beside it (the whole image, as the thumbnail), the ones
    # the question matches best: each costs one more image's tokens. 0: the whole image
    # only (the default: unmeasured on VQA, and the trained projector saw one image a
    # prompt; docs/resolution.md). Needs an index with tiles; not with `joint`.
    tiles: int = 0
