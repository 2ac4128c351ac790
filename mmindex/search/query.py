"""Combined queries: a text, plus or minus other texts and images, as one vector.

The syntax, the same for the CLI, `Index.search` and the page: in a query text, a word that
starts with `+` or `-` (at the start or after a space) is a term to add or subtract, and a
`+"quoted phrase"` adds the whole phrase; the rest is the base text. So
`beach +sunset -people` is beach + sunset - people, and `t-shirt` or `c++` stay words.
Python callers also pass terms as `plus=` / `minus=` lists, where a `pathlib.Path` is an
image and a `str` a text; the CLI's --plus / --minus take a text, or an image file's path.

The vector is the normalised sum of the terms' unit embeddings with their signs (the way
rclip combines them): each term weighs the same whatever its length."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from mmindex.errors import UserInputError

# a sign at the start or after whitespace, then a "quoted phrase" or a word
_TERM = re.compile(r'(?:(?<=\s)|^)([+-])(?:"([^"]*)"|([^\s"]+))')
_CANCELLED = 1e-3  # below this norm the terms cancel out: no direction is left to search


@dataclass(frozen=True)
class ParsedQuery:
    base: str  # the text outside the terms, "" when there is none
    plus: list[str] = field(default_factory=list)
    minus: list[str] = field(default_factory=list)


def parse_query(text: str) -> ParsedQuery:
    """`beach +sunset -"big crowds"` -> base "beach", plus ["sunset"], minus ["big crowds"]."""
    plus, minus = [], []
    for sign, phrase, word in _TERM.findall(text):
        term = (phrase or word).strip()
        if not term:
            raise UserInputError(f"an empty {sign}term in the query {text!r}: write "
                                 f"{sign}word or {sign}\"a phrase\"")
        (plus if sign == "+" else minus).append(term)
    base = " ".join(_TERM.sub(" ", text).split())
    return ParsedQuery(base, plus, minus)


def combine(positive: list[np.ndarray], negative: list[np.ndarray]) -> np.ndarray:
    """The unit vector of sum(unit(p)) - sum(unit(n)); refused when they cancel out."""
    if not positive:
        raise UserInputError("a query needs something to look for: a text, an image or a "
                             "+term; -terms only take away")
    total = sum(_unit(v) for v in positive) - sum((_unit(v) for v in negative), 0.0)
    norm = float(np.linalg.norm(total))
    if norm < _CANCELLED:
        raise UserInputError("the query's terms cancel each other out (the same thing added "
                             "and taken away): nothing is left to search for")
    return (total / norm).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
