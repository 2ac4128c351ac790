import hashlib
import re
from itertools import pairwise

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmindex.data.charts import (
    CHART_QUESTION_KINDS,
    MIN_GAP,
    TREND_GAP,
    VALUE_TOLERANCE,
    make_example,
    parse_chart_attributes,
    write_charts,
)
from mmindex.data.drawing import (
    CHART_COLORS,
    MONTHS,
    Chart,
    ChartStyle,
    chart_color,
    draw_chart,
    parse_program,
    render_chart,
)
from mmindex.data.shapes import NONE_ANSWER
from mmindex.errors import UserInputError


@pytest.fixture(scope="module")
def sample():
    return [make_example(4, i, size=64) for i in range(90)]


# ---------------------------------------------------------------- an independent oracle


def oracle(question: str, chart: Chart) -> str:
    values = dict(zip(chart.labels, chart.values))
    for pattern, answer in _RULES:
        match = re.fullmatch(pattern, question)
        if match:
            named = match.groups()
            if any(n in CHART_COLORS + MONTHS and n not in values for n in named):
                return NONE_ANSWER
            return answer(chart, values, *named)
    raise AssertionError(f"the oracle does not know the phrasing {question!r}")


def _top(values, sign):
    return max(values, key=lambda label: sign * values[label])


def _round_ten(value):
    # Ties never occur (values never end in 5); still computed without round() on purpose.
    return str(int((value + 5) // 10 * 10))


_RULES = [
    (r"Which (?:bar|slice) is the (longest|largest)\?", lambda c, v, _: _top(v, 1)),
    (r"Which (?:bar|slice) is the (shortest|smallest)\?", lambda c, v, _: _top(v, -1)),
    (r"In which month is the line (highest|lowest)\?",
     lambda c, v, w: _top(v, 1 if w == "highest" else -1)),
    (r"How many (bars|slices) are there\?", lambda c, v, _: str(len(v))),
    (r"How many points does the line have\?", lambda c, v: str(len(v))),
    (r"Is the (\w+) (?:bar|slice) (?:longer|larger) than the (\w+) (?:bar|slice)\?",
     lambda c, v, a, b: "yes" if v[a] > v[b] else "no"),
    (r"Which is larger, the (\w+) (?:bar|slice) or the (\w+) (?:bar|slice)\?",
     lambda c, v, a, b: a if v[a] > v[b] else b),
    (r"Is the value in (\w+) higher than in (\w+)\?",
     lambda c, v, a, b: "yes" if v[a] > v[b] else "no"),
    (r"Which month is higher, (\w+) or (\w+)\?", lambda c, v, a, b: a if v[a] > v[b] else b),
    (r"What is the value (?:in|of the) (\w+)(?: bar)?, to the nearest ten\?",
     lambda c, v, a: _round_ten(v[a])),
    (r"Does the line rise or fall from (\w+) to (\w+)\?",
     lambda c, v, a, b: "rises" if v[b] > v[a] else "falls"),
    (r"(?:What is the value of the|How tall is the|How large is the) (\w+) (?:bar|slice)\?",
     lambda c, v, a: str(v[a])),
    (r"What is the value in (\w+)\?", lambda c, v, a: str(v[a])),
]


# ---------------------------------------------------------------- questions and data


def test_every_answer_agrees_with_the_oracle_and_every_kind_is_asked(sample):
    kinds = set()
    for example in sample:
        for q in example.questions:
            assert oracle(q.question, example.chart) == q.answer, (q, example.chart)
            kinds.add(q.kind)
    assert kinds == set(CHART_QUESTION_KINDS)
    assert {e.chart.kind for e in sample} == {"bar", "line", "pie"}


def test_unanswerable_questions_name_what_the_chart_lacks(sample):
    for example in sample:
        absent = [q for q in example.questions if q.kind == "absent"]
        assert len(absent) == 1 and absent[0].answer == NONE_ANSWER
        named = set(re.findall(r"\w+", absent[0].question)) & set(CHART_COLORS + MONTHS)
        assert named and not named & set(example.chart.labels)


def test_values_leave_room_for_a_reader(sample):
    for example in sample:
        values = sorted(example.chart.values)
        assert min(b - a for a, b in pairwise(values)) >= MIN_GAP
        if example.chart.kind == "pie":
            assert sum(values) == 100
        else:
            # a reading within the tolerance rounds to the same ten as the true value
            for v in values:
                assert round((v - VALUE_TOLERANCE) / 10) == round((v + VALUE_TOLERANCE) / 10)
        if example.chart.kind == "line":
            assert abs(example.chart.values[-1] - example.chart.values[0]) >= TREND_GAP


def test_styles_and_captions_vary(sample):
    assert len({e.style.horizontal for e in sample}) == 2
    assert len({e.style.grid for e in sample}) == 2
    assert len({e.caption.split(" ")[1] for e in sample}) >= 4  # rising/falling/bar/pie
    for example in sample:
        assert example.chart.kind in example.caption


# ---------------------------------------------------------------- what is drawn


def _drawn_values(chart: Chart, style: ChartStyle) -> list[float]:
    """Re-read the values from the matplotlib artists that drew the chart."""
    import matplotlib.pyplot as plt

    figure = draw_chart(chart, 96, style)
    axes = figure.axes[0]
    try:
        if chart.kind == "line":
            return [float(y) for y in axes.lines[0].get_ydata()]
        if chart.kind == "pie":
            return [(w.theta2 - w.theta1) / 360 * 100 for w in axes.patches]
        return [p.get_width() if style.horizontal else p.get_height() for p in axes.patches]
    finally:
        plt.close(figure)


def test_drawn_values_are_the_stored_values(sample):
    for example in sample[:30]:
        drawn = _drawn_values(example.chart, example.style)
        np.testing.assert_allclose(drawn, example.chart.values, atol=1e-6)


def test_bar_heights_in_pixels_follow_the_values():
    chart = Chart("bar", ("red", "blue", "green"), (20.0, 80.0, 50.0))
    pixels = np.asarray(render_chart(chart, 200, ChartStyle(grid=False))).astype(int)
    heights = []
    for label in chart.labels:
        rgb = np.array(chart_color(label, ChartStyle())) * 255
        rows = np.where((np.abs(pixels - rgb).sum(-1) < 30).any(axis=1))[0]
        heights.append(rows.max() - rows.min() + 1)
    ratios = np.array(heights) / heights[1]
    np.testing.assert_allclose(ratios, np.array(chart.values) / 80.0, atol=0.04)


def test_stored_attributes_and_program_are_the_chart(tmp_path):
    write_charts(tmp_path / "c", n=6, seed=2, size=64)
    pairs = pq.read_table(tmp_path / "c" / "pairs.parquet").to_pylist()
    code = {r["image"]: r["answer"] for r in pq.read_table(tmp_path / "c" / "code.parquet")
            .to_pylist()}
    for index, pair in enumerate(pairs):
        chart, style = parse_chart_attributes(pair["attributes"])
        expected = make_example(2, index, size=64)
        assert (chart, style) == (expected.chart, expected.style)
        assert parse_program(code[pair["image"]]) == chart
        drawn = np.asarray(render_chart(chart, 64, style))
        assert np.array_equal(drawn, np.asarray(expected.image))  # the program redraws it


def test_same_seed_same_files_other_seed_other_charts(tmp_path):
    write_charts(tmp_path / "a", n=5, seed=1, size=48)
    write_charts(tmp_path / "b", n=5, seed=1, size=48)
    write_charts(tmp_path / "c", n=5, seed=2, size=48)
    for name in ("pairs.parquet", "questions.parquet", "code.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))
    digests = {d: {hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in (tmp_path / d / "images").iterdir()} for d in "abc"}
    assert digests["a"] == digests["b"] and not digests["a"] & digests["c"]


def test_a_full_folder_is_refused_unless_overwritten(tmp_path):
    write_charts(tmp_path / "a", n=1, size=48)
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        write_charts(tmp_path / "a", n=1, size=48)
    write_charts(tmp_path / "a", n=2, size=48, overwrite=True)
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / "a" / "images").iterdir())) == 2
