"""Image-to-code scoring: a model's drawing program against the program that drew the image.

Each output is parsed by the drawing language (`data/drawing.py`, never executed) and
rendered; one that does not parse, or parses but cannot be drawn, counts as unparseable.
What parses is compared with the target drawing:

- a scene: predicted objects are paired one-to-one with the true ones (the pairing that
  agrees on the most attributes); an object is matched when shape, colour and size agree
  and its cell is within POSITION_TOLERANCE of the true one. Score: matched objects over
  the larger of the two counts, so extra and missing objects both cost.
- a chart: the kind must agree; a data point is matched when its label is in the target
  and its value within VALUE_TOLERANCE (axis units, 0-100). Score: matched points over the
  larger count.

A report gives the unparseable rate (with a Wilson interval), the mean score, the share of
perfect programs, per-attribute accuracy for scenes and value accuracy for charts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmindex.data.drawing import Chart, Drawing, ProgramError, Scene, parse_program, render
from mmindex.errors import UserInputError

if TYPE_CHECKING:
    from mmindex.eval.vqa import VqaRow

POSITION_TOLERANCE = 0  # board cells (Chebyshev); 0: the exact cell
VALUE_TOLERANCE = 5.0  # chart axis units (the axis runs 0-100)
SCENE_ATTRIBUTES = ("shape", "color", "size", "position")
MAX_PROGRAM_TOKENS = 64  # the longest generated program is 46 SmolLM2 tokens, the mean 30
CODE_MODES = ("full", "text")


@dataclass(frozen=True)
class ProgramScore:
    parsed: bool
    score: float  # 0 when not parsed
    domain: str  # "scene" or "chart" (the target's)
    attributes: dict[str, float] = field(default_factory=dict)  # per-attribute agreement
    error: str = ""


@dataclass
class CodeResult:
    n: int
    unparseable: float
    unparseable_interval: tuple[float, float]
    mean_score: float
    perfect: float  # share of programs that score 1.0
    by_domain: dict[str, dict[str, float]]  # domain -> mean score and attribute accuracies
    seconds: float = 0.0
    examples: list[dict] = field(default_factory=list)


@dataclass
class CodeReport:
    modes: dict[str, CodeResult]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CodeEvalConfig:
    questions: Path  # code.parquet of a make-scenes / make-charts split
    checkpoint: Path | None = None  # a projector checkpoint that writes the programs
    predictions: Path | None = None  # or a table of programs already written (image, answer)
    llm: str | None = None
    limit: int | None = 100  # programs scored; None: all
    modes: tuple[str, ...] = CODE_MODES
    batch_size: int = 16
    precision: str = "auto"
    device: str = "cpu"
    seed: int = 0


# ---------------------------------------------------------------- one program


def score_program(target: str, predicted: str) -> ProgramScore:
    """How well `predicted` redraws the drawing of `target` (a program known to parse)."""
    truth = parse_program(target)
    domain = "scene" if isinstance(truth, Scene) else "chart"
    try:
        drawn = parse_program(predicted)
        render(drawn, size=64)  # it must also draw: a program that cannot is unusable
    except ProgramError as exc:
        return ProgramScore(False, 0.0, domain, error=str(exc))
    if isinstance(truth, Scene):
        return _score_scene(truth, drawn)
    return _score_chart(truth, drawn)


def _score_scene(truth: Scene, drawn: Drawing) -> ProgramScore:
    if not isinstance(drawn, Scene):
        return ProgramScore(True, 0.0, "scene", dict.fromkeys(SCENE_ATTRIBUTES, 0.0))
    pairs = pair_objects(truth.objects, drawn.objects)
    agree = {name: sum(_agrees(t, p, name) for t, p in pairs) / len(truth.objects)
             for name in SCENE_ATTRIBUTES}
    matched = sum(all(_agrees(t, p, name) for name in SCENE_ATTRIBUTES) for t, p in pairs)
    return ProgramScore(True, matched / max(len(truth.objects), len(drawn.objects)), "scene",
                        agree)


def _agrees(true_obj, drawn_obj, attribute: str) -> bool:
    if attribute == "position":
        return max(abs(true_obj.col - drawn_obj.col),
                   abs(true_obj.row - drawn_obj.row)) <= POSITION_TOLERANCE
    return getattr(true_obj, attribute) == getattr(drawn_obj, attribute)


def pair_objects(truth: Sequence, drawn: Sequence) -> list[tuple]:
    """One-to-one (true, drawn) pairs that agree on the most attributes in all (Hungarian
    assignment), so a program listing the right objects in another order loses nothing."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    if not truth or not drawn:
        return []
    disagreement = np.array([[sum(not _agrees(t, d, a) for a in SCENE_ATTRIBUTES)
                              for d in drawn] for t in truth])  # (n_true, n_drawn)
    rows, cols = linear_sum_assignment(disagreement)
    return [(truth[r], drawn[c]) for r, c in zip(rows, cols)]


def _score_chart(truth: Chart, drawn: Drawing) -> ProgramScore:
    if not isinstance(drawn, Chart) or drawn.kind != truth.kind:
        return ProgramScore(True, 0.0, "chart", {"kind": 0.0, "count": 0.0, "values": 0.0})
    true_values = dict(zip(truth.labels, truth.values))
    close = sum(1 for label, value in zip(drawn.labels, drawn.values)
                if label in true_values and abs(true_values[label] - value) <= VALUE_TOLERANCE)
    score = close / max(len(truth.labels), len(drawn.labels))
    return ProgramScore(True, score, "chart",
                        {"kind": 1.0, "count": float(len(drawn.labels) == len(truth.labels)),
                         "values": close / len(truth.labels)})


# ---------------------------------------------------------------- many programs


def score_programs(targets: Sequence[str], predictions: Sequence[str],
                   seconds: float = 0.0) -> CodeResult:
    """The report of predictions[i] against targets[i]."""
    if len(targets) != len(predictions):
        raise UserInputError(f"{len(predictions)} programs for {len(targets)} targets")
    if not targets:
        raise UserInputError("no programs to score")
    from mmindex.eval.vqa import wilson_interval

    scores = [score_program(t, p) for t, p in zip(targets, predictions)]
    failed = sum(not s.parsed for s in scores)
    step = max(len(scores) // 4, 1)
    examples = [{"target": t, "predicted": p, "score": s.score, "error": s.error}
                for t, p, s in list(zip(targets, predictions, scores))[::step][:4]]
    return CodeResult(
        n=len(scores), unparseable=failed / len(scores),
        unparseable_interval=wilson_interval(failed, len(scores)),
        mean_score=_mean(s.score for s in scores),
        perfect=_mean(s.score == 1.0 for s in scores),
        by_domain=_by_domain(scores), seconds=seconds, examples=examples)


def _by_domain(scores: Sequence[ProgramScore]) -> dict[str, dict[str, float]]:
    """Per domain: n, mean score, and each attribute's mean over the programs that parsed."""
    summary = {}
    for domain in sorted({s.domain for s in scores}):
        mine = [s for s in scores if s.domain == domain]
        parsed = [s for s in mine if s.parsed]
        row = {"n": float(len(mine)), "score": _mean(s.score for s in mine)}
        for name in (parsed[0].attributes if parsed else {}):
            row[name] = _mean(s.attributes[name] for s in parsed)
        summary[domain] = row
    return summary


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------- from a table or a model


def read_code_rows(path: Path, limit: int | None, seed: int) -> list[VqaRow]:
    """The code rows of a table (kind "code"), a seeded sample of `limit` of them."""
    import random

    from mmindex.eval.vqa import read_vqa_rows

    rows = [r for r in read_vqa_rows(path) if r.kind == "code"]
    if not rows:
        raise UserInputError(f"{path} has no rows of kind 'code'; use the code.parquet that "
                             "make-scenes or make-charts writes")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def score_prediction_table(config: CodeEvalConfig) -> CodeReport:
    """Programs written elsewhere (columns image, answer), scored against code.parquet."""
    from mmindex.core.tables import read_table

    rows = read_code_rows(config.questions, config.limit, config.seed)
    table = read_table(config.predictions)
    table.require(("image", "answer"), "a predictions table")
    written = {(config.predictions.parent / str(r["image"])).resolve(): str(r["answer"] or "")
               for _, r in table.rows if isinstance(r, dict) and r.get("image")}
    missing = [r.image for r in rows if r.image.resolve() not in written]
    if missing:
        raise UserInputError(f"{config.predictions} has no program for {len(missing)} image(s), "
                             f"the first {missing[0]}")
    predicted = [written[r.image.resolve()] for r in rows]
    return CodeReport({"given": score_programs([r.answer for r in rows], predicted)})


def run_code_eval(config: CodeEvalConfig) -> CodeReport:
    """Programs written by a projector checkpoint from each image (full) and from no image
    (text: the same LLM, the prompt alone), scored against the programs that drew them."""
    if (config.checkpoint is None) == (config.predictions is None):
        raise UserInputError("give exactly one of --projector (a model writes the programs) "
                             "or --predictions (a table of programs already written)")
    if config.predictions is not None:
        return score_prediction_table(config)
    unknown = set(config.modes) - set(CODE_MODES)
    if unknown:
        raise UserInputError(f"unknown mode(s) {sorted(unknown)}; choose from {CODE_MODES}")
    rows = read_code_rows(config.questions, config.limit, config.seed)
    vlm, features, image_rows = _model_and_features(config, rows)
    from mmindex.core.precision import autocast

    results = {}
    with autocast(config.precision, vlm.device):
        for mode in config.modes:
            started = time.perf_counter()
            images = [[i] if mode == "full" else [] for i in image_rows]
            written = _write_programs(vlm, features, rows, images, config.batch_size)
            results[mode] = score_programs([r.answer for r in rows], written,
                                           time.perf_counter() - started)
    return CodeReport(results)


def _model_and_features(config: CodeEvalConfig, rows: Sequence[VqaRow]):
    """The checkpoint's model and the rows' image features (row i's at image_rows[i])."""
    from mmindex.models.llm import load_llm
    from mmindex.models.registry import check_device, load_encoder
    from mmindex.models.vlm import load_vlm, read_vlm_config

    vlm_config = read_vlm_config(config.checkpoint)
    early = vlm_config.fusion == "early"  # reads pixels: no vision tower
    encoder = None if early else load_encoder(vlm_config.vision_model)
    check_device(config.device)
    fingerprint = vlm_config.vision_fingerprint if early else encoder.info.fingerprint
    vlm = load_vlm(config.checkpoint, load_llm(config.llm or vlm_config.llm),
                   fingerprint).to(config.device)
    paths = list(dict.fromkeys(r.image for r in rows))
    row_of = {p: i for i, p in enumerate(paths)}
    return vlm, vlm.image_features(encoder, paths), [row_of[r.image] for r in rows]


def _write_programs(vlm, features, rows, images, batch_size: int) -> list[str]:
    from mmindex.eval.vqa import answer_batch

    written = []
    for start in range(0, len(rows), batch_size):
        chunk = slice(start, start + batch_size)
        written += answer_batch(vlm, features, [r.question for r in rows[chunk]],
                                images[chunk], max_new_tokens=MAX_PROGRAM_TOKENS)
    return written


# ---------------------------------------------------------------- printing


def format_code(report: CodeReport) -> str:
    lines = []
    for mode, r in report.modes.items():
        low, high = r.unparseable_interval
        lines.append(f"{mode}: {r.n} programs, mean score {r.mean_score:.3f}, perfect "
                     f"{r.perfect:.3f}, unparseable {r.unparseable:.3f} (95% CI {low:.3f}-"
                     f"{high:.3f}); {r.seconds:.0f}s")
        for domain, row in r.by_domain.items():
            cells = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "n")
            lines.append(f"  {domain} (n={int(row['n'])}): {cells}")
    return "\n".join(lines) + "\n"
