"""A small drawing language: the programs that draw the scenes and charts, and that a model
writes back to redraw them (image-to-code).

A program is plain text, read by `parse_program` and never executed. Its first line names
what it draws; each further line is one object or one data point:

    scene                       bar chart          line chart        pie chart
    large red circle at 0 3     red 42             jan 12            red 30
    small blue star at 2 1      blue 17            feb 35            blue 70

Scene objects sit on a GRID x GRID board (column, row from the top left, 0-based). Chart
values are numbers from 0 to 100 (pie values are shares, drawn in proportion). The
generators draw every image through `render_scene` / `render_chart` from the parsed
program, so the program beside an image is exactly what drew it; style (tint, noise, bar
width, gridlines) is not part of the program, it varies the look only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# The shapes domain's vocabulary and drawing routines, so a scene's circle is drawn exactly
# as a make-shapes circle is (private helpers, imported on purpose: one way to draw shapes).
from mmindex.data.shapes import COLORS, SHAPES, SIZES, SUPERSAMPLE, _background, _draw_shape
from mmindex.errors import UserInputError

GRID = 5  # scene board: GRID columns x GRID rows
CHART_KINDS = ("bar", "line", "pie")
CHART_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "black")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MAX_ITEMS = 8  # more objects or points than any generator draws: a runaway output, refused
MAX_VALUE = 100.0
RADIUS_OF_CELL = {"small": 0.26, "large": 0.44}  # a 5-grid cell is smaller than a 3-grid one


class ProgramError(UserInputError):
    """A program that does not parse; the message names the line and the word."""


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    col: int  # 0 = leftmost column
    row: int  # 0 = top row

    @property
    def name(self) -> str:
        """How questions and answers name it: colour and shape (unique within a scene)."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class Chart:
    kind: str  # bar | line | pie
    labels: tuple[str, ...]  # colour names (bar, pie) or months (line)
    values: tuple[float, ...]


@dataclass(frozen=True)
class ChartStyle:
    """How a chart looks, apart from its data: varied by the generator, not in the program."""

    horizontal: bool = False  # bar charts: bars along x
    bar_width: float = 0.7
    grid: bool = True
    line_width: float = 2.0
    markers: bool = True
    background: str = "white"
    tint: tuple[int, ...] = field(default_factory=lambda: (0, 0, 0))  # added to each colour


Drawing = Scene | Chart


# ---------------------------------------------------------------- text <-> drawing


def format_program(drawing: Drawing) -> str:
    """The program text of a scene or chart; `parse_program` reads it back unchanged."""
    if isinstance(drawing, Scene):
        lines = ["scene"] + [f"{o.size} {o.color} {o.shape} at {o.col} {o.row}"
                             for o in drawing.objects]
    else:
        lines = [f"{drawing.kind} chart"] + [f"{label} {_number(value)}" for label, value
                                             in zip(drawing.labels, drawing.values)]
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_SCENE_LINE = re.compile(r"(\w+) (\w+) (\w+) at (-?\d+) (-?\d+)")
_CHART_LINE = re.compile(r"(\w+) (-?\d+(?:\.\d+)?)")


def parse_program(text: str) -> Drawing:
    """A Scene or a Chart from program text. Case and extra spaces do not matter; anything
    else that is not the language raises ProgramError naming the line."""
    if not isinstance(text, str):
        raise ProgramError(f"a program is text, got {type(text).__name__}")
    lines = [re.sub(r"\s+", " ", line).strip().lower() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ProgramError("empty program: the first line must be 'scene' or '<bar|line|pie> "
                           "chart'")
    header, body = lines[0], lines[1:]
    if not body:
        raise ProgramError(f"the program {header!r} draws nothing: no line after the first")
    if len(body) > MAX_ITEMS:
        raise ProgramError(f"{len(body)} items; a program draws at most {MAX_ITEMS}")
    if header == "scene":
        return Scene(tuple(_scene_object(line, n) for n, line in enumerate(body, start=2)))
    kind = header.removesuffix(" chart")
    if header.endswith(" chart") and kind in CHART_KINDS:
        return _chart(kind, body)
    raise ProgramError(f"line 1: {header!r} is not 'scene', 'bar chart', 'line chart' or "
                       "'pie chart'")


def _scene_object(line: str, number: int) -> SceneObject:
    match = _SCENE_LINE.fullmatch(line)
    if not match:
        raise ProgramError(f"line {number}: {line!r} is not '<size> <colour> <shape> at "
                           "<column> <row>'")
    size, color, shape, col, row = match.groups()
    _require(size, SIZES, "size", number)
    _require(color, COLORS, "colour", number)
    _require(shape, SHAPES, "shape", number)
    col, row = int(col), int(row)
    if not (0 <= col < GRID and 0 <= row < GRID):
        raise ProgramError(f"line {number}: position {col} {row} is off the {GRID}x{GRID} "
                           f"board (0 to {GRID - 1})")
    return SceneObject(shape, color, size, col, row)


def _chart(kind: str, body: Sequence[str]) -> Chart:
    labels, values = [], []
    vocabulary = MONTHS if kind == "line" else CHART_COLORS
    for number, line in enumerate(body, start=2):
        match = _CHART_LINE.fullmatch(line)
        if not match:
            raise ProgramError(f"line {number}: {line!r} is not '<label> <value>'")
        label, value = match.group(1), float(match.group(2))
        _require(label, vocabulary, "label", number)
        if label in labels:
            raise ProgramError(f"line {number}: the label {label!r} appears twice")
        if not 0.0 <= value <= MAX_VALUE:
            raise ProgramError(f"line {number}: value {value:g} is outside 0 to {MAX_VALUE:g}")
        labels.append(label)
        values.append(value)
    if kind == "pie" and sum(values) <= 0:
        raise ProgramError("a pie chart needs some value above 0")
    return Chart(kind, tuple(labels), tuple(values))


def _require(word: str, vocabulary, what: str, number: int) -> None:
    if word not in vocabulary:
        raise ProgramError(f"line {number}: unknown {what} {word!r}; choose from "
                           f"{', '.join(vocabulary)}")


# ---------------------------------------------------------------- rendering


def render(drawing: Drawing, size: int = 128, rng: np.random.Generator | None = None,
           style: ChartStyle | None = None, background: str = "plain") -> Image.Image:
    """A scene or chart as an RGB image of size x size pixels."""
    if isinstance(drawing, Scene):
        return render_scene(drawing, size, background, rng)
    return render_chart(drawing, size, style or ChartStyle())


def render_scene(scene: Scene, size: int = 128, background: str = "plain",
                 rng: np.random.Generator | None = None) -> Image.Image:
    """Each object centred in its board cell on a shapes background; `rng` jitters tint and
    radius a little, never the cell, so every relation in the program holds in the pixels."""
    rng = rng if rng is not None else np.random.default_rng(0)
    canvas = _background(background, size, rng)  # (size, size, 3) float32
    big = size * SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cell = big / GRID
    for obj in scene.objects:
        radius = RADIUS_OF_CELL[obj.size] * cell * rng.uniform(0.93, 1.07)
        jitter = rng.integers(-12, 13, size=3)  # (3,) one colour name covers nearby hues
        fill = tuple(int(v) for v in np.clip(np.array(COLORS[obj.color]) + jitter, 0, 255))
        _draw_shape(draw, obj.shape, (obj.col + 0.5) * cell, (obj.row + 0.5) * cell, radius,
                    fill + (255,))
    alpha_layer = np.asarray(layer.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0
    alpha = alpha_layer[..., 3:]  # (size, size, 1)
    pixels = canvas * (1.0 - alpha) + alpha_layer[..., :3] * 255.0 * alpha
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def chart_color(label: str, style: ChartStyle) -> tuple[float, float, float]:
    """A bar or slice's RGB in [0, 1]: its colour name's, tinted by the style."""
    rgb = np.clip(np.array(COLORS[label]) + np.array(style.tint), 0, 255) / 255.0
    return tuple(float(v) for v in rgb)


def render_chart(chart: Chart, size: int = 128, style: ChartStyle | None = None) -> Image.Image:
    """The chart drawn by matplotlib (Agg, no display) at size x size pixels."""
    figure = draw_chart(chart, size, style or ChartStyle())
    import matplotlib.pyplot as plt

    try:
        figure.canvas.draw()
        pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]  # (size, size, 3)
    finally:
        plt.close(figure)
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def draw_chart(chart: Chart, size: int, style: ChartStyle):
    """The matplotlib figure of a chart, left open: tests read back what its artists hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    figure, axes = plt.subplots(figsize=(size / dpi, size / dpi), dpi=dpi)
    figure.patch.set_facecolor(style.background)
    axes.set_facecolor(style.background)
    {"bar": _bars, "line": _line, "pie": _pie}[chart.kind](axes, chart, style)
    if chart.kind != "pie":
        axes.tick_params(labelsize=5, length=2, pad=1)
        for spine in ("top", "right"):
            axes.spines[spine].set_visible(False)
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.12, top=0.97)
    return figure


def _bars(axes, chart: Chart, style: ChartStyle) -> None:
    colors = [chart_color(label, style) for label in chart.labels]
    places = np.arange(len(chart.values))
    draw, value_axis = (axes.barh, axes.xaxis) if style.horizontal else (axes.bar, axes.yaxis)
    draw(places, chart.values, style.bar_width, color=colors)
    limit = axes.set_xlim if style.horizontal else axes.set_ylim
    limit(0, MAX_VALUE)  # one fixed axis, so a bar's length alone tells its value
    ticks = axes.set_yticks if style.horizontal else axes.set_xticks
    ticks(places, chart.labels)
    if style.grid:
        axes.grid(True, axis="x" if style.horizontal else "y", linewidth=0.4, alpha=0.6)
        axes.set_axisbelow(True)
    value_axis.set_ticks([0, 20, 40, 60, 80, 100])


def _line(axes, chart: Chart, style: ChartStyle) -> None:
    places = np.arange(len(chart.values))
    axes.plot(places, chart.values, color=chart_color("blue", style),
              linewidth=style.line_width, marker="o" if style.markers else None, markersize=3)
    axes.set_ylim(0, MAX_VALUE)
    axes.set_xlim(-0.3, len(chart.values) - 0.7)
    axes.set_xticks(places, chart.labels)
    axes.set_yticks([0, 20, 40, 60, 80, 100])
    if style.grid:
        axes.grid(True, linewidth=0.4, alpha=0.6)


def _pie(axes, chart: Chart, style: ChartStyle) -> None:
    colors = [chart_color(label, style) for label in chart.labels]
    # Clockwise from 12 o'clock, so the first value always starts at the same place.
    axes.pie(chart.values, colors=colors, startangle=90, counterclock=False,
             wedgeprops={"linewidth": 0.8 if style.grid else 0.0, "edgecolor": style.background})
    axes.set_aspect("equal")
