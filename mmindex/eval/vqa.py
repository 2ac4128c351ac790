"""VQA evaluation of a projector + LLM on (image, question, answer, kind) rows.

Three conditions answer the same questions: the full model (real image tokens), the same LLM
with no image at all (text only), and random image tokens with the real tokens' per-channel
mean and spread. A fourth, the prior, needs no model: the most frequent training answer to
each question text (the best any image-blind model trained on those questions can do).
Hallucination: "yes" to an object that is not there, and any answer but "there is none" to
a question that presumes a missing object. Tests and benchmarks call `evaluate_vqa`.

With several images per question (`evaluate_multi_image`), each question's image stands
among distractors that hold nothing the question names (no star for "What color is the
star?"), so the set has the answer the image alone has. Two ways answer it: "joint" (one
prompt with every image, as `ask --joint`) and "each" (every image asked alone, as `ask`
does by default, the answers combined by `combine_answers`).
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mmindex.core.progress import Progress, no_progress
from mmindex.errors import UserInputError
from mmindex.eval.config import MODES, MULTI_MODES, VqaConfig

NONE_ANSWER = "there is none"
NEGATIVE_ANSWERS = ("no", NONE_ANSWER)  # what an image without the named object answers


@dataclass(frozen=True)
class VqaRow:
    image: Path
    question: str
    answer: str
    kind: str




@dataclass
class ModeResult:
    accuracy: dict[str, float]  # kind -> exact match
    overall: float
    hallucination: dict[str, float]  # exists_yes_when_absent, absent_not_none
    # Each hallucination rate's 95% Wilson interval and the questions behind it: at 100 per
    # kind a measured 5.5% cannot be told from a 5% aim, and the report should say so.
    hallucination_interval: dict[str, tuple[float, float]]
    hallucination_n: dict[str, int]
    yes_rate_present: float
    seconds: float
    new_tokens: int
    examples: list[dict] = field(default_factory=list)  # a few (question, answer, predicted)


@dataclass
class VqaReport:
    n_questions: int
    per_kind: dict[str, int]
    modes: dict[str, ModeResult]
    prior: dict[str, float] | None  # kind -> accuracy of the per-question majority answer

    def to_dict(self) -> dict:
        return asdict(self)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().rstrip(".!")).strip()


def sample_rows(rows: Sequence[VqaRow], per_kind: int | None, seed: int) -> list[VqaRow]:
    by_kind: dict[str, list[VqaRow]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
    rng = random.Random(seed)
    picked = []
    for kind in sorted(by_kind):
        items = by_kind[kind]
        picked += items if per_kind is None else rng.sample(items, min(per_kind, len(items)))
    return picked


def evaluate_vqa(vlm, features: torch.Tensor, rows: Sequence[VqaRow], image_rows: Sequence[int],
                 modes: Sequence[str] = MODES, batch_size: int = 32,
                 prior_rows: Sequence[VqaRow] | None = None, precision: str = "fp32",
                 progress: Progress = no_progress) -> VqaReport:
    """Score each mode on `rows`; features (N, T, C) hold their images, row i's at
    features[image_rows[i]]. `progress` counts the questions answered, per mode."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise UserInputError(f"unknown VQA mode(s) {sorted(unknown)}; choose from {MODES}")
    from mmindex.core.precision import autocast

    with autocast(precision, vlm.device):
        results = {mode: _run_mode(vlm, _features_for(mode, features), rows, image_rows, mode,
                                   batch_size, progress) for mode in modes}
    prior = prior_accuracy(prior_rows, rows) if prior_rows else None
    return VqaReport(len(rows), dict(Counter(r.kind for r in rows)), results, prior)


def _features_for(mode: str, features: torch.Tensor) -> torch.Tensor:
    if mode != "random":
        return features
    real = features.float()
    mean, std = real.mean(dim=(0, 1)), real.std(dim=(0, 1))  # (C,) each
    generator = torch.Generator().manual_seed(0)
    return torch.randn(real.shape, generator=generator) * std + mean  # (N, T, C)


def _run_mode(vlm, features, rows, image_rows, mode: str, batch_size: int,
              progress: Progress = no_progress) -> ModeResult:
    images = [[] if mode == "text" else [image_rows[i]] for i in range(len(rows))]
    return _run_prompts(vlm, features, rows, images, batch_size, progress=progress, stage=mode)


def _run_prompts(vlm, features, rows, images: Sequence[list[int]], batch_size,
                 progress: Progress = no_progress, stage: str = "answering") -> ModeResult:
    """Row i asked once, with the images features[images[i]] in its prompt, and scored."""
    started = time.perf_counter()
    predictions, new_tokens = _predict(vlm, features, [r.question for r in rows], images,
                                       batch_size, progress, stage)
    return _score(rows, predictions, time.perf_counter() - started, new_tokens)


def _predict(vlm, features, questions: Sequence[str], images: Sequence[list[int]],
             batch_size: int, progress: Progress = no_progress,
             stage: str = "answering") -> tuple[list[str], int]:
    """Each question answered from its images (rows of features); also the new tokens."""
    predictions, new_tokens = [], 0
    for start in range(0, len(questions), batch_size):
        chunk = slice(start, start + batch_size)
        answers = answer_batch(vlm, features, questions[chunk], images[chunk])
        predictions += answers
        new_tokens += sum(len(vlm.tokenizer(a).input_ids) + 1 for a in answers)
        progress(stage, len(predictions), len(questions))
    return predictions, new_tokens


# ---------------------------------------------------------------- several images per question


def evaluate_multi_image(vlm, features: torch.Tensor, rows: Sequence[VqaRow],
                         image_sets: Sequence[list[int]], modes: Sequence[str] = MULTI_MODES,
                         batch_size: int = 32, precision: str = "fp32",
                         progress: Progress = no_progress) -> VqaReport:
    """Score "joint" and "each" on `rows`, row i shown the images features[image_sets[i]]
    (its own among distractors, see distractor_sets)."""
    unknown = set(modes) - set(MULTI_MODES)
    if unknown:
        raise UserInputError(f"unknown mode(s) {sorted(unknown)} for several images per "
                             f"question; choose from {MULTI_MODES}")
    from mmindex.core.precision import autocast

    runs = {"joint": _run_prompts, "each": _run_each}
    with autocast(precision, vlm.device):
        results = {mode: runs[mode](vlm, features, rows, image_sets, batch_size,
                                    progress=progress, stage=mode) for mode in modes}
    return VqaReport(len(rows), dict(Counter(r.kind for r in rows)), results, None)


def _run_each(vlm, features, rows, image_sets, batch_size, progress: Progress = no_progress,
              stage: str = "each") -> ModeResult:
    started = time.perf_counter()
    questions = [r.question for r, images in zip(rows, image_sets) for _ in images]
    singles = [[image] for images in image_sets for image in images]
    answers, new_tokens = _predict(vlm, features, questions, singles, batch_size, progress,
                                   stage)
    predictions, start = [], 0
    for images in image_sets:
        predictions.append(combine_answers(answers[start:start + len(images)]))
        start += len(images)
    return _score(rows, predictions, time.perf_counter() - started, new_tokens)


def combine_answers(answers: Sequence[str]) -> str:
    """One answer for a set of images from each one's own: the one thing found, if the images
    found exactly one ("yes" from any image answers "Is there...?"); when none found
    anything, their most common negative ("no" or "there is none"); when they found
    different things, all of them, which matches no single expected answer."""
    said = [normalise(a) for a in answers]
    found = list(dict.fromkeys(a for a in said if a not in NEGATIVE_ANSWERS))
    if not found:
        return Counter(said).most_common(1)[0][0] if said else NONE_ANSWER
    return " | ".join(found)


def named_objects(question: str) -> tuple[str | None, str | None]:
    """The colour and the shape a shapes question names (None where it names none)."""
    from mmindex.data.shapes import COLORS, SHAPES

    words = set(re.findall(r"[a-z]+", question.lower()))
    color = next((c for c in COLORS if c in words), None)
    shape = next((s for s in SHAPES if s in words), None)
    return color, shape


def holds(objects, color: str | None, shape: str | None) -> bool:
    """Whether any object has the named colour and shape (either may be unnamed)."""
    return any((color is None or o.color == color) and (shape is None or o.shape == shape)
               for o in objects)


def distractor_sets(rows: Sequence[VqaRow], objects: dict[Path, tuple], k: int,
                    seed: int = 0) -> list[tuple[VqaRow, list[Path]]]:
    """For each row whose question names a colour or a shape, its image and k-1 others that
    hold no such object, the row's image at a random place among them. Questions that name
    nothing ("How many shapes are there?") have no such distractors and are left out, as are
    rows whose image has no known objects."""
    rng = random.Random(seed)
    pool = sorted(objects)  # resolved paths, as read_objects keys them
    picked = []
    for row in rows:
        color, shape = named_objects(row.question)
        image = row.image.resolve()
        if (color is None and shape is None) or image not in objects:
            continue
        others = [p for p in pool if p != image and not holds(objects[p], color, shape)]
        if len(others) < k - 1:
            continue
        images = rng.sample(others, k - 1)
        images.insert(rng.randrange(k), image)
        picked.append((row, images))
    return picked


def read_objects(pairs: Path) -> dict[Path, tuple]:
    """Each image's objects, from the attributes column `make-shapes` writes."""
    import pyarrow.parquet as pq

    from mmindex.data.shapes import parse_attributes

    if not pairs.is_file():
        raise UserInputError(f"no pairs file at {pairs}: several images per question need "
                             "each image's objects (the attributes column of make-shapes' "
                             "pairs.parquet); pass --pairs FILE")
    table = pq.read_table(pairs)
    if "attributes" not in table.column_names:
        raise UserInputError(f"{pairs} has no attributes column; several images per question "
                             "need make-shapes' pairs.parquet")
    root = pairs.parent
    return {(root / image).resolve(): parse_attributes(text)
            for image, text in zip(table["image"].to_pylist(), table["attributes"].to_pylist())}


# ---------------------------------------------------------------- one batch of answers


def answer_batch(vlm, features, questions: Sequence[str], images: Sequence[list[int]],
                 max_new_tokens: int = 8) -> list[str]:
    from mmindex.models.vlm import build_example, collate

    tokenizer = vlm.tokenizer
    examples = [build_example(tokenizer, q, imgs, vlm.slots)
                for q, imgs in zip(questions, images)]
    batch = collate(examples, tokenizer.pad_token_id, left_pad=True)
    return vlm.generate(batch, features[batch.images].float(), max_new_tokens)


def _score(rows, predictions, seconds: float, new_tokens: int) -> ModeResult:
    hits: dict[str, list[bool]] = defaultdict(list)
    for row, predicted in zip(rows, predictions):
        hits[row.kind].append(normalise(predicted) == normalise(row.answer))
    said = [(row, normalise(p)) for row, p in zip(rows, predictions)]
    absent_exists = [p == "yes" for r, p in said if r.kind == "exists" and r.answer == "no"]
    present_exists = [p == "yes" for r, p in said if r.kind == "exists" and r.answer == "yes"]
    absent = [p != NONE_ANSWER for r, p in said if r.kind == "absent"]
    examples = [{"question": r.question, "answer": r.answer, "predicted": p}
                for r, p in zip(rows[::max(len(rows) // 6, 1)], predictions[::max(len(rows) // 6, 1)])]
    hallucinated = {"exists_yes_when_absent": absent_exists, "absent_not_none": absent}
    return ModeResult(
        accuracy={kind: _mean(v) for kind, v in sorted(hits.items())},
        overall=_mean([h for v in hits.values() for h in v]),
        hallucination={name: _mean(v) for name, v in hallucinated.items()},
        hallucination_interval={name: wilson_interval(sum(v), len(v))
                                for name, v in hallucinated.items()},
        hallucination_n={name: len(v) for name, v in hallucinated.items()},
        yes_rate_present=_mean(present_exists), seconds=seconds, new_tokens=new_tokens,
        examples=examples)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a rate: unlike the normal approximation it stays inside
    [0, 1] and is not zero-width at 0 of n, which is where hallucination rates live."""
    if n == 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


def prior_accuracy(train: Sequence[VqaRow], rows: Sequence[VqaRow]) -> dict[str, float]:
    """Accuracy of answering each question text with its most frequent training answer
    (unseen texts: the most frequent answer of their kind)."""
    by_text: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        by_text[r.question][normalise(r.answer)] += 1
        by_kind[r.kind][normalise(r.answer)] += 1
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        votes = by_text.get(r.question) or by_kind.get(r.kind) or Counter({"": 1})
        hits[r.kind].append(votes.most_common(1)[0][0] == normalise(r.answer))
    accuracy = {kind: _mean(v) for kind, v in sorted(hits.items())}
    accuracy["overall"] = _mean([h for v in hits.values() for h in v])
    return accuracy


# ---------------------------------------------------------------- loading everything


def read_vqa_rows(path: Path) -> list[VqaRow]:
    from mmindex.data.questions import read_questions

    return [VqaRow(image, q, a, kind) for image, q, a, kind in read_questions(path)]


def run_vqa(config: VqaConfig, progress: Progress = no_progress) -> VqaReport:
    """Load the checkpoint's vision model and LLM, cache the images' tokens, evaluate."""
    from mmindex.models.llm import load_llm
    from mmindex.models.registry import check_device, load_encoder
    from mmindex.models.vlm import load_vlm, read_vlm_config

    vlm_config = read_vlm_config(config.checkpoint)
    early = vlm_config.fusion == "early"  # reads pixels: no vision tower to load
    encoder = None if early else load_encoder(vlm_config.vision_model)
    check_device(config.device)
    vlm = load_vlm(config.checkpoint, load_llm(config.llm or vlm_config.llm),
                   vlm_config.vision_fingerprint if early else encoder.info.fingerprint
                   ).to(config.device)
    if config.images_per_question > 1:
        return _run_multi_image(config, vlm, encoder, progress)
    rows = sample_rows(read_vqa_rows(config.questions), config.per_kind, config.seed)
    if config.tiles:
        return _run_with_tiles(config, vlm, encoder, rows, progress)
    paths = list(dict.fromkeys(r.image for r in rows))
    row_of = {p: i for i, p in enumerate(paths)}
    features = vlm.image_features(encoder, paths)  # (N, T, C)
    prior = read_vqa_rows(config.train_questions) if config.train_questions else None
    return evaluate_vqa(vlm, features, rows, [row_of[r.image] for r in rows],
                        config.modes or MODES, config.batch_size, prior, config.precision,
                        progress)


def tiles_column(budget: int) -> str:
    return f"{budget} tiles"


def _run_with_tiles(config: VqaConfig, vlm, encoder, rows: list[VqaRow],
                    progress: Progress = no_progress) -> VqaReport:
    """One column per budget b: each question shown its image and the b tiles of it that
    best match the question, as `ask --tiles b` shows them (search/tiles.question_tiles)."""
    from mmindex.core.precision import autocast
    from mmindex.data.tiles import View
    from mmindex.search.searcher import open_index
    from mmindex.search.tiles import question_tiles

    if config.index is None or min(config.tiles) < 0:
        raise UserInputError("--tiles takes budgets of 0 or more tiles (e.g. 0,1,2,4) and "
                             "needs --index, the questions' images ingested with --tiles")
    boxes = question_tiles(open_index(config.index), [(r.image, r.question) for r in rows],
                           max(config.tiles))
    row_of: dict = {}  # image or View -> row of the features, each computed once
    shown = [[row_of.setdefault(r.image, len(row_of))] +
             [row_of.setdefault(View(r.image, box), len(row_of)) for box in mine]
             for r, mine in zip(rows, boxes)]
    features = vlm.image_features(encoder, list(row_of))  # (N, T, C)
    with autocast(config.precision, vlm.device):
        results = {tiles_column(b): _run_prompts(vlm, features, rows, [s[:1 + b] for s in shown],
                                                 config.batch_size, progress=progress,
                                                 stage=tiles_column(b)) for b in config.tiles}
    prior = prior_accuracy(read_vqa_rows(config.train_questions), rows) \
        if config.train_questions else None
    return VqaReport(len(rows), dict(Counter(r.kind for r in rows)), results, prior)


def _run_multi_image(config: VqaConfig, vlm, encoder,
                     progress: Progress = no_progress) -> VqaReport:
    objects = read_objects(config.pairs or Path(config.questions).parent / "pairs.parquet")
    naming = [r for r in read_vqa_rows(config.questions) if any(named_objects(r.question))]
    askable = distractor_sets(sample_rows(naming, config.per_kind, config.seed), objects,
                              config.images_per_question, config.seed)
    if not askable:
        raise UserInputError(f"no question of {config.questions} names a colour or shape of "
                             "an image in the pairs file; are they from the same split?")
    rows, sets = [row for row, _ in askable], [images for _, images in askable]
    paths = list(dict.fromkeys(p for images in sets for p in images))
    row_of = {p: i for i, p in enumerate(paths)}
    features = vlm.image_features(encoder, paths)  # (N, T, C)
    return evaluate_multi_image(vlm, features, rows, [[row_of[p] for p in s] for s in sets],
                                config.modes or MULTI_MODES, config.batch_size,
                                config.precision, progress)


def compare_checkpoints(config: VqaConfig, checkpoints: Sequence[Path],
                        progress: Progress = no_progress) -> VqaReport:
    """One checkpoint: its report as run_vqa gives it. Several (e.g. the three fusions): the
    same questions through each one's full model, a column per checkpoint, named by its
    fusion (or folder where two share one)."""
    if len(checkpoints) == 1:
        return run_vqa(dataclasses.replace(config, checkpoint=checkpoints[0]), progress)
    if config.tiles:
        raise UserInputError("--tiles makes a column per budget: give one --projector")
    from mmindex.models.vlm import read_vlm_config

    fusions = [read_vlm_config(c).fusion for c in checkpoints]
    names = fusions if len(set(fusions)) == len(fusions) else [Path(c).name for c in checkpoints]
    mode = "each" if config.images_per_question > 1 else "full"
    reports = [run_vqa(dataclasses.replace(config, checkpoint=c, modes=(mode,)),
                       _named(progress, name)) for c, name in zip(checkpoints, names)]
    first = reports[0]
    return VqaReport(first.n_questions, first.per_kind,
                     {name: r.modes[mode] for name, r in zip(names, reports)}, first.prior)


def _named(progress: Progress, name: str) -> Progress:
    """`progress` with each stage prefixed by the checkpoint's column name."""
    return lambda stage, done, total, **metrics: progress(f"{name}: {stage}", done, total,
                                                          **metrics)


def format_vqa(report: VqaReport) -> str:
    """A per-kind table: one column per condition, then hallucination and timing lines."""
    kinds = sorted(report.per_kind)
    columns = list(report.modes) + (["prior"] if report.prior else [])
    width = max(8, *(len(c) for c in columns))
    lines = [f"{'kind':<10} {'n':>4} " + " ".join(f"{c:>{width}}" for c in columns)]
    for kind in kinds + ["overall"]:
        n = report.n_questions if kind == "overall" else report.per_kind[kind]
        cells = [r.overall if kind == "overall" else r.accuracy.get(kind, float("nan"))
                 for r in report.modes.values()]
        if report.prior:
            cells.append(report.prior.get(kind, float("nan")))
        lines.append(f"{kind:<10} {n:>4} " + " ".join(f"{c:>{width}.3f}" for c in cells))
    for mode, r in report.modes.items():
        lines.append(f"{mode}: 'yes' for an absent object {_rate(r, 'exists_yes_when_absent')}, "
                     f"'yes' for a present one {r.yes_rate_present:.3f}, answer to a missing "
                     f"object not 'there is none' {_rate(r, 'absent_not_none')}; "
                     f"{r.seconds:.0f}s, {r.new_tokens / max(r.seconds, 1e-9):.1f} new tokens/s")
    return "\n".join(lines) + "\n"


def _rate(result: ModeResult, name: str) -> str:
    low, high = result.hallucination_interval[name]
    return (f"{result.hallucination[name]:.3f} (95% CI {low:.3f}-{high:.3f}, "
            f"n={result.hallucination_n[name]})")


def plot_vqa(report: VqaReport, path: Path) -> Path:
    """format_vqa's table as grouped bars: accuracy per kind, one bar per condition."""
    import numpy as np

    from mmindex.core import plots

    kinds = sorted(report.per_kind) + ["overall"]
    columns = {mode: [r.overall if k == "overall" else r.accuracy.get(k, np.nan) for k in kinds]
               for mode, r in report.modes.items()}
    if report.prior:
        columns["prior"] = [report.prior.get(k, np.nan) for k in kinds]
    figure, axes = plots.figure(size=(8, 3.5))
    width = 0.8 / len(columns)
    for i, (name, values) in enumerate(columns.items()):
        bars = axes.bar(np.arange(len(kinds)) + i * width, values, width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=6)
    axes.set_xticks(np.arange(len(kinds)) + width * (len(columns) - 1) / 2, kinds)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set(ylabel="exact match", ylim=(0, 1.2),  # the headroom holds the legend
             title=f"VQA, {report.n_questions} held-out questions")
    axes.legend(loc="upper center", fontsize="small", ncols=len(columns), frameon=False)
    return plots.save(figure, path)
