"""Charts with exact answers: bar, line and pie charts drawn by matplotlib from their data.

Bars and slices are named by their colour ("the blue bar"), which a small image shows
better than a text label; a line chart's points are months from January on. Values are
drawn so every question has one answer a reader of the image can give:

- bar and line values are whole numbers 8-98 on a fixed 0-100 axis, at least MIN_GAP apart,
  each within 2 of a multiple of ten, so a reading off by up to VALUE_TOLERANCE (2, 2% of
  the axis) still rounds to the right ten: the `value` kind asks for the nearest ten;
- a line's last point is at least TREND_GAP above or below its first (`trend`);
- pie shares are whole percentages summing to 100, at least MIN_GAP apart.

`make-charts` writes pairs.parquet (caption; attributes: kind, labels, values, style),
questions.parquet (kind per question) and code.parquet (the program that drew the chart).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mmindex.data.drawing import (
    CHART_COLORS,
    CHART_KINDS,
    MONTHS,
    Chart,
    ChartStyle,
    format_program,
    render_chart,
)
from mmindex.data.shapes import NONE_ANSWER, Question, _pick
from mmindex.data.splits import (
    CODE_KIND,
    SplitSummary,
    check_split_arguments,
    prepare_out_dir,
    write_split,
)

CHART_QUESTION_KINDS = ("largest", "smallest", "trend", "count", "compare", "value", "absent")
CODE_PROMPT = "Write the drawing program for this chart."
MIN_GAP = 6  # between any two values: "which is larger" never hangs on a pixel
TREND_GAP = 20  # a line's last point vs its first
VALUE_TOLERANCE = 2  # a reading this far off still rounds to the value's nearest ten
POINTS = {"bar": (3, 6), "line": (4, 7), "pie": (3, 5)}  # items per chart, inclusive
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class ChartExample:
    name: str
    image: object  # PIL image
    chart: Chart
    style: ChartStyle
    caption: str
    questions: tuple[Question, ...]
    program: str


# ---------------------------------------------------------------- sampling


def readable_value(value: int) -> bool:
    """Whether a reading within VALUE_TOLERANCE rounds to the value's own nearest ten."""
    return min(value % 10, 10 - value % 10) + VALUE_TOLERANCE < 5


def sample_chart(rng: np.random.Generator, kind: str | None = None) -> Chart:
    kind = kind or _pick(CHART_KINDS, rng)
    low, high = POINTS[kind]
    count = int(rng.integers(low, high + 1))
    if kind == "pie":
        values = _pie_shares(rng, count)
    else:
        values = _spaced_values(rng, count, rising=bool(rng.integers(2)) if kind == "line"
                                else None)
    if kind == "line":
        labels = MONTHS[:count]
    else:
        labels = tuple(str(c) for c in rng.permutation(CHART_COLORS)[:count])
    return Chart(kind, labels, tuple(float(v) for v in values))


def _spaced_values(rng: np.random.Generator, count: int, rising: bool | None) -> list[int]:
    """count values from 8-98, readable, MIN_GAP apart; with `rising` set, the last is
    TREND_GAP above (or below) the first. Rejection sampling: a few tries at most."""
    allowed = np.array([v for v in range(8, 99) if readable_value(v)])
    while True:
        values = [int(v) for v in rng.choice(allowed, size=count, replace=False)]
        ordered = sorted(values)
        if min(b - a for a, b in pairwise(ordered)) < MIN_GAP:
            continue
        if rising is None or (values[-1] - values[0]) * (1 if rising else -1) >= TREND_GAP:
            return values


def _pie_shares(rng: np.random.Generator, count: int) -> list[int]:
    while True:
        weights = rng.dirichlet(np.full(count, 2.0))
        shares = [int(v) for v in np.round(weights * 100)]
        shares[-1] = 100 - sum(shares[:-1])  # whole percentages that sum to exactly 100
        ordered = sorted(shares)
        if ordered[0] >= 5 and min(b - a for a, b in pairwise(ordered)) >= MIN_GAP:
            return shares


def sample_style(rng: np.random.Generator) -> ChartStyle:
    return ChartStyle(
        horizontal=bool(rng.random() < 0.3),
        bar_width=float(rng.uniform(0.5, 0.9)),
        grid=bool(rng.integers(2)),
        line_width=float(rng.uniform(1.2, 3.0)),
        markers=bool(rng.integers(2)),
        background=str(_pick(("white", "#f4f4f0", "#eef2f7"), rng)),
        tint=tuple(int(v) for v in rng.integers(-15, 16, size=3)),
    )


# ---------------------------------------------------------------- captions


def trend(chart: Chart) -> str:
    return "rises" if chart.values[-1] > chart.values[0] else "falls"


def make_caption(chart: Chart, template: int = 0) -> str:
    count = NUMBER_WORDS[len(chart.values)]
    top = chart.labels[int(np.argmax(chart.values))]
    if chart.kind == "line":
        moving = "rising" if trend(chart) == "rises" else "falling"
        span = f"{chart.labels[0]} to {chart.labels[-1]}"
        forms = (f"a {moving} line chart with {count} points",
                 f"a line chart that {trend(chart)} from {span}, highest in {top}")
    elif chart.kind == "bar":
        forms = (f"a bar chart with {count} bars, the {top} bar longest",
                 f"a bar chart of {', '.join(chart.labels)} bars")
    else:
        forms = (f"a pie chart with {count} slices, the {top} slice largest",
                 f"a pie chart of {', '.join(chart.labels)} slices")
    return forms[template % len(forms)]


# ---------------------------------------------------------------- questions


def make_questions(chart: Chart, rng: np.random.Generator) -> tuple[Question, ...]:
    """One question of each kind the chart allows (trend: line charts; value: not pies)."""
    asked = [_extreme(chart, largest=True), _extreme(chart, largest=False),
             _count(chart), _compare(chart, rng), _absent(chart, rng)]
    if chart.kind == "line":
        asked.append(_trend_question(chart, rng))
    if chart.kind != "pie":
        asked.append(_value(chart, rng))
    return tuple(asked)


def _noun(chart: Chart) -> str:
    return {"bar": "bar", "pie": "slice", "line": "month"}[chart.kind]


def _extreme(chart: Chart, largest: bool) -> Question:
    index = int(np.argmax(chart.values) if largest else np.argmin(chart.values))
    if chart.kind == "line":
        which = "highest" if largest else "lowest"
        text = f"In which month is the line {which}?"
    elif chart.kind == "bar":
        text = f"Which bar is the {'longest' if largest else 'shortest'}?"
    else:
        text = f"Which slice is the {'largest' if largest else 'smallest'}?"
    return Question(text, chart.labels[index], "largest" if largest else "smallest")


def _count(chart: Chart) -> Question:
    noun = {"bar": "bars", "pie": "slices", "line": "points does the line have"}[chart.kind]
    text = (f"How many {noun}?" if chart.kind == "line" else f"How many {noun} are there?")
    return Question(text, str(len(chart.values)), "count")


def _compare(chart: Chart, rng: np.random.Generator) -> Question:
    i, j = (int(k) for k in rng.choice(len(chart.values), size=2, replace=False))
    a, b = chart.labels[i], chart.labels[j]
    larger = a if chart.values[i] > chart.values[j] else b
    if chart.kind == "line":
        form = int(rng.integers(2))
        if form == 0:
            return Question(f"Is the value in {a} higher than in {b}?",
                            "yes" if larger == a else "no", "compare")
        return Question(f"Which month is higher, {a} or {b}?", larger, "compare")
    noun = _noun(chart)
    if rng.integers(2):
        adjective = "longer" if chart.kind == "bar" else "larger"
        return Question(f"Is the {a} {noun} {adjective} than the {b} {noun}?",
                        "yes" if larger == a else "no", "compare")
    return Question(f"Which is larger, the {a} {noun} or the {b} {noun}?", larger, "compare")


def nearest_ten(value: float) -> int:
    return int(10 * round(value / 10))


def _value(chart: Chart, rng: np.random.Generator) -> Question:
    index = int(rng.integers(len(chart.values)))
    label = chart.labels[index]
    subject = f"the value in {label}" if chart.kind == "line" else f"the value of the {label} bar"
    return Question(f"What is {subject}, to the nearest ten?",
                    str(nearest_ten(chart.values[index])), "value")


def _trend_question(chart: Chart, rng: np.random.Generator) -> Question:
    first, last = chart.labels[0], chart.labels[-1]
    if rng.integers(2):
        return Question(f"Does the line rise or fall from {first} to {last}?", trend(chart),
                        "trend")
    return Question(f"Is the value in {last} higher than in {first}?",
                    "yes" if trend(chart) == "rises" else "no", "trend")


def _absent(chart: Chart, rng: np.random.Generator) -> Question:
    """A question about a bar, slice or month the chart does not have: the honest answer is
    that there is none (eval vqa counts any other answer as a hallucination)."""
    vocabulary = MONTHS if chart.kind == "line" else CHART_COLORS
    missing = _pick([w for w in vocabulary if w not in chart.labels], rng)
    if chart.kind == "line":
        text = f"What is the value in {missing}?"
    elif chart.kind == "bar":
        text = _pick((f"What is the value of the {missing} bar?",
                      f"How tall is the {missing} bar?"), rng)
    else:
        text = f"How large is the {missing} slice?"
    return Question(text, NONE_ANSWER, "absent")


# ---------------------------------------------------------------- a whole split


def image_name(seed: int, index: int) -> str:
    return f"images/c{seed}_{index:06d}.png"


def make_example(seed: int, index: int, size: int = 128) -> ChartExample:
    rng = np.random.default_rng([seed, index, 7])  # 7: not the shapes or scenes stream
    chart = sample_chart(rng)
    style = sample_style(rng)
    image = render_chart(chart, size, style)
    caption = make_caption(chart, int(rng.integers(2)))
    return ChartExample(image_name(seed, index), image, chart, style, caption,
                        make_questions(chart, rng), format_program(chart))


def chart_attributes(chart: Chart, style: ChartStyle) -> str:
    """What drew the chart, stored beside its image: data and style."""
    return json.dumps({"kind": chart.kind, "labels": list(chart.labels),
                       "values": list(chart.values), "style": asdict(style)})


def parse_chart_attributes(text: str) -> tuple[Chart, ChartStyle]:
    data = json.loads(text)
    style = data["style"] | {"tint": tuple(data["style"]["tint"])}
    return (Chart(data["kind"], tuple(data["labels"]), tuple(data["values"])),
            ChartStyle(**style))


def write_charts(out_dir: str | Path, n: int, seed: int = 0, size: int = 128,
                 overwrite: bool = False) -> SplitSummary:
    """n chart images with pairs.parquet, questions.parquet, code.parquet and charts.json."""
    check_split_arguments(n, seed, size)
    out = prepare_out_dir(Path(out_dir), overwrite, "charts.json")
    examples = (make_example(seed, i, size) for i in range(n))
    rows = ((e.name, e.image, e.caption, chart_attributes(e.chart, e.style), e.questions,
             Question(CODE_PROMPT, e.program, CODE_KIND)) for e in examples)
    return write_split(out, rows, CHART_QUESTION_KINDS,
                       {"generator": "mmindex.data.charts", "version": 1, "seed": seed,
                        "size": size, "value_tolerance": VALUE_TOLERANCE}, "charts.json")
