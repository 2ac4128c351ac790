"""Grounded answers: retrieve the top-k images, put their vision tokens before the question,
let the LLM answer, and cite the images it was shown. When even the best hit scores below
the index's threshold, say that nothing relevant was found instead of inventing an answer.

The threshold is per index (its scores depend on its model): `calibrate` picks the score that
best separates queries the collection answers (its own captions) from off-topic ones, and
stores it in `<index>/ask.json` with the model's fingerprint; `--threshold` overrides it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmindex.ask.config import AskConfig
from mmindex.core.atomic import write_atomically
from mmindex.errors import UserInputError

CALIBRATION_FILE = "ask.json"
PROJECTOR_ENV = "MMINDEX_PROJECTOR"
PROJECTOR_DIR = "projector"  # default checkpoint location inside an index directory
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
    """An index, its vision model and a trained projector + LLM, ready to answer."""

    def __init__(self, index, vlm):
        self.index, self.vlm = index, vlm

    def ask(self, question: str, config: AskConfig = AskConfig(),
            on_text: Callable[[str], None] | None = None) -> Answer:
        """The answer with its citations; `on_text` receives the answer's text as it is
        generated (nothing when it abstains), for a terminal or an HTTP stream."""
        started = time.perf_counter()
        hits = self.index.search(question, k=config.k, where=config.where)
        threshold = config.threshold if config.threshold is not None else stored_threshold(self.index)
        best = hits[0].score if hits else None
        if best is None or (threshold is not None and best < threshold):
            return Answer(question, NOT_FOUND, (), True, threshold, best,
                          time.perf_counter() - started, 0)
        paths = [Path(h.path) for h in hits]
        if config.joint:
            text, new_tokens = self._answer(question, paths, config.max_new_tokens, on_text)
            own = [None] * len(hits)
        else:
            text, new_tokens, own = self._answer_each(question, paths, config.max_new_tokens,
                                                      on_text)
        citations = tuple(Citation(i, h.id, h.path, h.score, answer)
                          for i, (h, answer) in enumerate(zip(hits, own), 1))
        return Answer(question, text, citations, False, threshold, best,
                      time.perf_counter() - started, new_tokens)

    def caption(self, image: Path, max_new_tokens: int = 48) -> str:
        from mmindex.models.vlm import CAPTION_PROMPT

        return self._answer(CAPTION_PROMPT, [Path(image)], max_new_tokens)[0]

    def _answer_each(self, question: str, images: Sequence[Path], max_new_tokens: int,
                     on_text: Callable[[str], None] | None = None):
        """Ask each image alone: the text is one "[tag] answer" line per image, streamed as
        it is generated; also returns the new tokens and each image's own answer."""
        answers, new_tokens = [], 0
        for tag, image in enumerate(images, 1):
            if on_text is not None:
                on_text(("\n" if tag > 1 else "") + f"[{tag}] ")
            text, n = self._answer(question, [image], max_new_tokens, _trimmed(on_text))
            answers.append(text)
            new_tokens += n
        text = "\n".join(f"[{tag}] {answer}" for tag, answer in enumerate(answers, 1))
        return text, new_tokens, answers

    def _answer(self, prompt: str, images: Sequence[Path], max_new_tokens: int,
                on_text: Callable[[str], None] | None = None):
        from mmindex.models.vlm import build_example, collate

        vlm = self.vlm
        features = vlm.image_features(self.index.encoder, images)  # (k, T, C)
        example = build_example(vlm.tokenizer, prompt, list(range(len(images))),
                                vlm.config.image_tokens)
        batch = collate([example], vlm.tokenizer.pad_token_id, left_pad=True)
        text = vlm.generate(batch, features, max_new_tokens, on_text)[0]
        return text, len(vlm.tokenizer(text).input_ids)


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


def open_generator(index_dir: Path, projector: Path | None = None,
                   llm: str | None = None, device: str = "cpu") -> Generator:
    """The index's own encoder, the projector trained for it, and that projector's LLM.
    `device` holds the projector and the LLM; retrieval and the vision tokens stay on the
    CPU, where the index's encoder is (k images' tokens are cheap to move)."""
    from mmindex.models.registry import check_device
    from mmindex.search.searcher import open_index

    check_device(device)  # before the index and the LLM's seconds of loading
    index = open_index(index_dir)
    return Generator(index, load_vlm_for(index, projector, llm, device))


def load_vlm_for(index, projector: Path | None = None, llm: str | None = None,
                 device: str = "cpu"):
    """The projector trained for this index's encoder (INDEX/projector unless named) and the
    LLM it names (or `llm`), on `device`. Raises UserInputError or ModelError."""
    from mmindex.models.llm import load_llm
    from mmindex.models.registry import check_device
    from mmindex.models.vlm import load_vlm, read_vlm_config

    check_device(device)
    checkpoint = projector_dir(index.root, projector)
    config = read_vlm_config(checkpoint)
    vlm = load_vlm(checkpoint, load_llm(llm or config.llm), index.encoder.info.fingerprint)
    return vlm.to(device)


def projector_dir(index_root: Path, given: Path | None) -> Path:
    path = given or (Path(os.environ[PROJECTOR_ENV]) if os.environ.get(PROJECTOR_ENV)
                     else Path(index_root) / PROJECTOR_DIR)
    if not (path / "config.json").is_file():
        raise UserInputError(f"no projector checkpoint at {path}: train one with `mmindex "
                             f"train-projector --out {path}` or pass --projector DIR")
    return path


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
