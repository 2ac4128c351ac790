"""Grounded answers: retrieve the top-k images (and the texts) the question is about, let the
answerer (a trained projector + LLM, or a pretrained vision-language model) answer from them,
and cite what it was shown. When nothing scores above the index's threshold, say that
nothing relevant was found instead of inventing an answer.

The threshold is per index (its scores depend on its model): `calibrate` picks the score that
best separates queries the collection answers (its own captions) from off-topic ones, and
stores it in `<index>/ask.json` with the model's fingerprint; `--threshold` overrides it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmindex.ask.answerers import load_answerer, resolve_generator  # noqa: F401 (serve)
from mmindex.ask.config import AskConfig
from mmindex.core.atomic import write_atomically
from mmindex.data.pages import page_item, where_in_file
from mmindex.errors import UserInputError

CALIBRATION_FILE = "ask.json"
PASSAGE_CHARS = 1500  # of each cited text in the prompt: a few passages fit a small context
NOT_FOUND = "I found nothing relevant in the collection."
# Queries no image collection of shapes, documents or holidays answers in general; a user
# calibrating a photo collection should pass their own with --off-topic.
OFF_TOPIC = (
    "the stock price of a bank in 1998", "a recipe for lentil soup", "the lyrics of a folk song",
    "a tax form with a signature", "the engine of a diesel truck", "a map of the subway",
    "a violin concerto score", "a spreadsheet of quarterly sales", "a close-up of a mosquito",
    "a crowd at a football stadium", "a bowl of ramen", "a snowy mountain village at night",
)




@dataclass(frozen=True)
class Citation:
    tag: int  # [tag] in the prompt and the answer
    id: int
    path: str
    score: float
    answer: str | None = None  # this image's own answer; None when asked jointly
    page: int | None = None  # a PDF page's number: the citation is `path p. N`

    @property
    def label(self) -> str:
        return where_in_file(self.path, self.page)


@dataclass(frozen=True)
class Passage:
    """A text of the collection given to the model as evidence, cited as [T1], [T2]..."""

    tag: str
    id: int
    path: str
    key: str  # where in the file ("row 12"; "" for a whole file)
    text: str
    score: float

    @property
    def label(self) -> str:
        return where_in_file(self.path, key=self.key)


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    citations: tuple[Citation, ...]
    abstained: bool
    threshold: float | None
    best_score: float | None
    seconds: float
    new_tokens: int
    passages: tuple[Passage, ...] = ()
    generator: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    threshold: float
    fingerprint: str  # the index model's; another model means calibrating again
    n_relevant: int
    n_off_topic: int
    balanced_accuracy: float


class Generator:
    """An index and an answerer (a trained projector + LLM, or a pretrained vision-language
    model; ask/answerers.py), ready to answer from the collection."""

    def __init__(self, index, answerer):
        self.index, self.answerer = index, answerer

    def ask(self, question: str, config: AskConfig = AskConfig(),
            on_text: Callable[[str], None] | None = None) -> Answer:
        """The answer with its citations; `on_text` receives the answer's text as it is
        generated (nothing when it abstains), for a terminal or an HTTP stream."""
        started = time.perf_counter()
        if config.tiles:
            _check_tiles(self.index, config, self.answerer)
        # an answerer that cannot see images is shown none: it answers from passages alone
        reads_images = getattr(self.answerer, "reads_images", True)
        hits = self.index.search(question, k=config.k, where=config.where) \
            if reads_images else []
        threshold = config.threshold
        if threshold is None:
            threshold = stored_threshold(self.index)
        best = hits[0].score if hits else None
        if best is None or (threshold is not None and best < threshold):
            hits = []  # the best image is off topic: the texts alone may still answer
        passages = self._passages(question, config, threshold)
        if not hits and not passages:
            return Answer(question, NOT_FOUND, (), True, threshold, best,
                          time.perf_counter() - started, 0, (), self.answerer.name)
        # a PDF page goes to the answerer as its page item, which every image load renders
        paths = [Path(page_item(h.path, h.page) if h.page else h.path) for h in hits]
        prompt = with_passages(question, passages, images=bool(paths))
        if config.joint or not paths:
            text, new_tokens = self.answerer.answer(prompt, paths, config.max_new_tokens,
                                                    _trimmed(on_text))
            own = [None] * len(hits)
        else:
            shown = [self._views(question, h, path, config.tiles) for h, path in zip(hits, paths)]
            text, new_tokens, own = self._answer_each(prompt, shown, config.max_new_tokens,
                                                      on_text)
        citations = tuple(Citation(i, h.id, h.path, h.score, answer, h.page)
                          for i, (h, answer) in enumerate(zip(hits, own), 1))
        return Answer(question, text, citations, False, threshold, best,
                      time.perf_counter() - started, new_tokens, passages, self.answerer.name)

    def caption(self, image: Path, max_new_tokens: int = 48) -> str:
        from mmindex.models.vlm import CAPTION_PROMPT

        return self.answerer.answer(CAPTION_PROMPT, [Path(image)], max_new_tokens)[0]

    def _passages(self, question: str, config: AskConfig,
                  threshold: float | None) -> tuple[Passage, ...]:
        """The index's texts that pass the text threshold (the image one unless given)."""
        if config.texts <= 0 or not self.index.rows("texts").num_rows:
            return ()
        mode, floor = _passage_ranking(config, threshold)
        hits = self.index.search(question, k=config.texts, target="texts", mode=mode)
        return tuple(Passage(f"T{i}", h.id, h.path, h.key or "", h.text or "", h.score)
                     for i, h in enumerate((h for h in hits
                                            if floor is None or h.score >= floor), 1))

    def _views(self, question: str, hit, whole: Path, tiles: int) -> list:
        """What one retrieved image is shown as: the whole image (`whole`: its file, or its
        page item), then (with `tiles`) its tiles that best match the question, best first,
        at most `tiles` of them. A tile's box is in the pixels of the row's size (a PDF
        page's: its rendering at ingest), which the View carries to crop the page."""
        if tiles <= 0:
            return [whole]
        from mmindex.data.tiles import View
        from mmindex.search.tiles import best_tiles

        boxes = best_tiles(self.index, self.index.query_vector(question), hit.id, tiles)
        return [whole] + [View(whole, box, (hit.width, hit.height)) for box in boxes]

    def _answer_each(self, prompt: str, images: Sequence, max_new_tokens: int,
                     on_text: Callable[[str], None] | None = None):
        """Ask each image alone (an image: a path, or a list of views of one image): the text
        is one "[tag] answer" line per image, streamed as it is generated; also returns the
        new tokens and each image's own answer."""
        answers, new_tokens = [], 0
        for tag, image in enumerate(images, 1):
            if on_text is not None:
                on_text(("\n" if tag > 1 else "") + f"[{tag}] ")
            views = image if isinstance(image, list) else [image]
            text, n = self.answerer.answer(prompt, views, max_new_tokens, _trimmed(on_text))
            answers.append(text)
            new_tokens += n
        text = "\n".join(f"[{tag}] {answer}" for tag, answer in enumerate(answers, 1))
        return text, new_tokens, answers


def _passage_ranking(config: AskConfig, threshold: float | None):
    """(search mode, cosine floor) for the passages: a floor is a cosine similarity, so it
    ranks by the vectors (hybrid scores are fused ranks, lexical ones BM25: search/
    lexical.py); a lexical or hybrid ranking has no floor. Without either: the default."""
    mode = config.passage_mode
    if mode is not None:
        from mmindex.search.lexical import check_mode

        check_mode(mode)
    if mode in ("lexical", "hybrid"):
        if config.text_threshold is not None:
            raise UserInputError(f"--text-threshold is a cosine similarity, which passages "
                                 f"ranked by --passage-mode {mode} do not have: leave it out, "
                                 "or rank by --passage-mode vector")
        return mode, None
    floor = config.text_threshold if config.text_threshold is not None else threshold
    return ("vector" if floor is not None else mode), floor


def _check_tiles(index, config: AskConfig, answerer) -> None:
    from mmindex.search.tiles import require_tiles

    if not getattr(answerer, "reads_images", True):
        raise UserInputError(f"--tiles shows images, and {answerer.name} reads text only: "
                             "leave out --tiles or name a vision-language generator")
    if config.tiles < 0:
        raise UserInputError(f"--tiles must be 0 or a number of tiles, not {config.tiles}")
    if config.joint:
        raise UserInputError("--tiles shows each retrieved image with its tiles, one image "
                             "at a time; it does not combine with --joint")
    require_tiles(index, "ask --tiles")


def with_passages(question: str, passages: Sequence[Passage], images: bool = True) -> str:
    """The question after the cited passages it may be answered from; `images`: whether an
    image is shown with them (the prompt then points to it too)."""
    if not passages:
        return question
    cited = "\n".join(f"[{p.tag}] {p.text[:PASSAGE_CHARS]}" for p in passages)
    source = "them or the image" if images else "them"
    return f"Passages from the collection:\n{cited}\n\nAnswer from {source}. {question}"


def _trimmed(on_text: Callable[[str], None] | None):
    """on_text receiving exactly the stripped answer (as Answer.text has it): the opening
    whitespace dropped, whitespace held back until more text follows it."""
    if on_text is None:
        return None
    started, held = False, ""

    def forward(text: str) -> None:
        nonlocal started, held
        text = held + text if started else text.lstrip()
        body = text.rstrip()
        held = text[len(body):]
        if body:
            started = True
            on_text(body)
    return forward


def open_generator(index_dir: Path, projector: Path | None = None, llm: str | None = None,
                   device: str = "cpu", generator: str | None = None) -> Generator:
    """The index and the answerer `generator` names (or its default; ask/answerers.py).
    `device` holds the answering model; retrieval and the CLIP stay on the CPU."""
    from mmindex.models.registry import check_device
    from mmindex.search.searcher import open_index

    check_device(device)  # before the index and the model's seconds of loading
    index = open_index(index_dir)
    return Generator(index, load_answerer(index, generator, projector, llm, device))


# ---------------------------------------------------------------- the abstain threshold


def calibrate(index, relevant: Sequence[str], off_topic: Sequence[str] = OFF_TOPIC,
              save: bool = True) -> Calibration:
    """The top-1 score threshold that best separates relevant from off-topic queries
    (balanced accuracy); saved in the index directory unless save is False."""
    if not relevant or not off_topic:
        raise UserInputError("calibration needs relevant and off-topic queries")
    good = np.array([_top_score(index, q) for q in relevant])  # (R,)
    bad = np.array([_top_score(index, q) for q in off_topic])  # (O,)
    threshold, accuracy = best_threshold(good, bad)
    result = Calibration(threshold, index.manifest.model.fingerprint, len(good), len(bad),
                         accuracy)
    if save:
        write_atomically(Path(index.root) / CALIBRATION_FILE, json.dumps(asdict(result), indent=2))
    return result


def relevant_queries(path: Path, n: int, seed: int = 0) -> list[str]:
    """Queries the collection answers: the questions of a questions table (those presuming a
    missing object left out), else the captions of a pairs file; n sampled."""
    import random

    try:
        from mmindex.data.questions import read_questions

        texts = [q for _, q, _, kind in read_questions(path) if kind != "absent"]
    except UserInputError:  # no question column: a pairs file or folder
        from mmindex.data.pairs import load_pairs

        texts = [p.caption for p in load_pairs(path)]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def best_threshold(good: np.ndarray, bad: np.ndarray) -> tuple[float, float]:
    """Midpoint between neighbouring scores that maximises balanced accuracy."""
    scores = np.unique(np.concatenate([good, bad]))  # sorted
    candidates = np.concatenate([[scores[0] - 1e-6], (scores[1:] + scores[:-1]) / 2,
                                 [scores[-1] + 1e-6]])
    accuracy = [((good >= t).mean() + (bad < t).mean()) / 2 for t in candidates]
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


def _top_score(index, query: str) -> float:
    hits = index.search(query, k=1)
    return hits[0].score if hits else -1.0


def stored_threshold(index) -> float | None:
    """The calibrated threshold, if one was made for this index's current model."""
    path = Path(index.root) / CALIBRATION_FILE
    if not path.is_file():
        import warnings

        from mmindex.errors import MmindexWarning

        warnings.warn("this index has no calibrated abstain threshold; run `mmindex "
                      "calibrate-ask PAIRS` or pass --threshold", MmindexWarning, stacklevel=3)
        return None
    data = json.loads(path.read_text())
    if data.get("fingerprint") != index.manifest.model.fingerprint:
        raise UserInputError(f"{path} was calibrated for another model; run `mmindex "
                             "calibrate-ask` again or pass --threshold")
    return float(data["threshold"])
