"""What `eval vqa` is given: plain data, light to import (the CLI takes its defaults from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODES = ("full", "text", "random")
MULTI_MODES = ("joint", "each")  # several images per question


@dataclass(frozen=True)
class VqaConfig:
    questions: Path  # held-out image/question/answer/kind table
    checkpoint: Path  # projector checkpoint directory
    llm: str | None = None  # None: the LLM the checkpoint names
    train_questions: Path | None = None  # for the prior baseline
    per_kind: int | None = 100  # questions sampled per kind; None: all
    modes: tuple[str, ...] | None = None  # None: MODES (MULTI_MODES for several images)
    batch_size: int = 32
    seed: int = 0
    precision: str = "auto"  # core/precision.py
    device: str = "cpu"  # "cuda": the LLM and projector answer on a GPU
    # >1: each question's image among distractors (modes MULTI_MODES); their objects come
    # from the pairs file's attributes (None: pairs.parquet beside the questions)
    images_per_question: int = 1
    pairs: Path | None = None
    # budgets: one column per b, each question shown its image and the b tiles `ask --tiles
    # b` would pick from `index` (an index of the questions' images ingested with tiles)
    tiles: tuple[int, ...] | None = None  # None: the images alone, no tile columns
    index: Path | None = None
