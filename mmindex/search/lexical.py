"""Lexical search (BM25 over the stored texts) and reciprocal rank fusion with the vectors.

Names and numbers are what people look up in documents ("the invoice from ACME for
1,250.00"), and a CLIP-style embedding barely tells 1,250.00 from 1,350.00. BM25 (the
`bm25s` library, Lucene's variant) ranks the `texts` rows by the query's words; `hybrid`
merges that ranking with the vector ranking by reciprocal rank fusion.

Tokens (`tokenize`): lower-cased NFKC text split into words and numbers. A number keeps
its decimals and loses its thousands separators, so "1,250.00" and "1250.00" are one
token "1250.00"; a decimal also yields its whole part ("1250"), so a query for
"1,250" finds it. An identifier joined by - or / ("INV-2024-0153", "03/15/2024") is a token
as well as its parts. English stop words are dropped ("the", "for", "from"...).

Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): a candidate's fused score is the
sum over the rankings it appears in of 1 / (RRF_K + rank), rank 1-based, RRF_K = 60; ties go
to the candidate whose best rank is better, then to the lower id, so the order is
deterministic. Each ranking contributes its top FUSION_DEPTH (or k, when larger).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmindex.errors import UserInputError

SEARCH_MODES = ("vector", "lexical", "hybrid")
RRF_K = 60  # the constant of the original paper, the default of most engines
FUSION_DEPTH = 100  # candidates each ranking hands to the fusion

# A number with its separators ("1,250.00", "3.5"), or a run of word characters; a chain of
# them joined by - or / is an identifier people type as one (INV-2024-0153, 03/15/2024).
_PART = r"\d[\d,.]*\d|\w+"
_TOKEN = re.compile(_PART)
_CHAIN = re.compile(rf"(?:{_PART})(?:[-/](?:{_PART}))*")
_SIGNED = re.compile(rf"(?:(?<![\w-])-(?=\d))?(?:{_PART})")  # a negative number keeps its sign
_STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "if", "in",
    "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their",
    "then", "there", "these", "they", "this", "to", "was", "will", "with", "what", "which",
    "who", "whose", "s",
})


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of a text (see the module's docstring)."""
    tokens = []
    for chain in _CHAIN.findall(unicodedata.normalize("NFKC", text).lower()):
        if "-" in chain or "/" in chain:
            tokens.append(chain)
            parts = _TOKEN.findall(chain)
        else:
            parts = (chain,)
        for token in parts:
            if token[0].isdigit() and not token.isdigit():
                tokens += _number_tokens(token)
            elif token not in _STOP_WORDS:
                tokens.append(token)
    return tokens


def normalized(text: str) -> str:
    """A text as the tokens read it, to compare answers: lower-cased NFKC words and numbers
    joined by one space, numbers without thousands separators ('1,250.00' and '1250.00'
    are '1250.00'), punctuation and identifiers' joiners dropped ('INV-2024-0153' is
    'inv 2024 0153'), a minus sign kept before a number ('-1,250.00' is '-1250.00'), stop
    words kept (a name may be one)."""
    parts = _SIGNED.findall(unicodedata.normalize("NFKC", text).lower())
    return " ".join(_canonical(part) for part in parts)


def _canonical(part: str) -> str:
    sign, number = ("-", part[1:]) if part.startswith("-") else ("", part)
    if number[0].isdigit() and not number.isdigit():
        return sign + _number_tokens(number)[0]
    return sign + number


def _number_tokens(token: str) -> list[str]:
    """'1,250.00' -> ['1250.00', '1250']; a comma before the last two digits is a decimal
    comma ('1.250,00' -> ['1250.00', '1250'])."""
    decimal = re.search(r"[.,](\d{1,2})$", token)
    whole = re.sub(r"[.,]", "", token[: decimal.start()] if decimal else token)
    return [f"{whole}.{decimal.group(1)}", whole] if decimal else [whole]


class LexicalIndex:
    """BM25 over a fixed list of passages (one generation's texts rows), by row id."""

    def __init__(self, ids: np.ndarray, texts: Sequence[str | None]):
        import bm25s
        from bm25s.tokenization import Tokenized

        self.ids = np.asarray(ids, dtype=np.int64)  # (N,)
        vocabulary: dict[str, int] = {}
        # token ids made here: bm25s's own conversion of strings took 2.8x as long
        token_ids = [[vocabulary.setdefault(token, len(vocabulary)) for token in tokenize(t or "")]
                     for t in texts]
        self._bm25 = bm25s.BM25() if vocabulary else None  # bm25s refuses an empty vocabulary
        if self._bm25 is not None:
            self._bm25.index(Tokenized(ids=token_ids, vocab=vocabulary), show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               excluded_terms: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top k passages sharing a token with the query, best first;
        only ids in `allowed` when given; none that contain every token of an excluded
        term ("-term" in a query)."""
        tokens = tokenize(query)
        if not tokens or self._bm25 is None:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = self._bm25.get_scores(tokens)  # (N,)
        keep = scores > 0
        if allowed is not None:
            keep &= np.isin(self.ids, allowed)
        for term in excluded_terms:
            keep &= ~self._containing_all(tokenize(term))
        candidates = np.flatnonzero(keep)
        # best first; equal scores by id, so the order never depends on the sort's mood
        order = np.lexsort((self.ids[candidates], -scores[candidates]))[:k]
        return scores[candidates[order]].astype(np.float32), self.ids[candidates[order]]

    def _containing_all(self, tokens: list[str]) -> np.ndarray:
        present = np.ones(len(self.ids), dtype=bool)
        for token in tokens:
            present &= self._bm25.get_scores([token]) > 0
        return present if tokens else np.zeros(len(self.ids), dtype=bool)


@dataclass(frozen=True)
class Fused:
    id: int
    score: float  # the sum of 1 / (RRF_K + rank) over the rankings it appears in
    best_rank: int


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int,
                           rrf_k: int = RRF_K) -> list[Fused]:
    """The top k of the rankings (each a list of ids, best first) merged by RRF."""
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            item = int(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
            best[item] = min(best.get(item, rank), rank)
    ordered = sorted(scores, key=lambda i: (-scores[i], best[i], i))
    return [Fused(i, scores[i], best[i]) for i in ordered[:k]]


def check_mode(mode: str) -> str:
    if mode not in SEARCH_MODES:
        raise UserInputError(f"search mode must be one of {', '.join(SEARCH_MODES)}, "
                             f"not {mode!r}")
    return mode

