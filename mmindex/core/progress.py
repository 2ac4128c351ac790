"""The one way long work reports progress: ingest, finetune, the projector stages and the
server's ingest jobs all call a `Progress` with the same arguments."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, /, **metrics: float) -> None:
        """`done` of `total` units of `stage` (total 0: not known yet); `metrics` are numbers
        worth showing beside the count, such as a training loss."""


def no_progress(stage: str, done: int, total: int, /, **metrics: float) -> None:
    """A Progress that reports nothing, for callers that passed none."""
