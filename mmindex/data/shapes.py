"""The synthetic shapes domain: images whose every caption and every answer is known.

No pretrained weights reach our machines, so retrieval, fine-tuning and grounded answering
are measured here. Each image holds one to three objects, one per cell of a 3×3 grid, so
objects never overlap and "where" always has one exact answer. Within an image no two
objects share both colour and shape, so "the red circle" always names one object.

`render_image`, `make_caption` and `make_questions` are pure: tests and the shifted
fine-tuning split reuse them; `write_shapes` only loops and writes files.

Styles draw and word the same scenes differently (issue 28), so a model's transfer to a
renderer it never saw can be measured: `flat` is the original drawing, byte for byte;
`textured` puts the objects on stripes, checks or blotches; `rotated` turns and resizes
every shape. Both draw at 4x and shrink, and use more caption and question phrasings.
The objects of example (seed, index) are the same in every style.

A canvas (`canvas` > size, issue 24) draws the same scene, at the same pixel size, at a
random place of a larger, empty backdrop: with `--size 96 --canvas 512` an object is
2.2-2.8 % (small) or 4.3-5.2 % (large) of the image's side, the small details that one
downscaled vector loses. The caption and questions are the scene's (their positions are
within the scene's box, which pairs.parquet gives as `box`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmindex.errors import UserInputError

SHAPES = ("circle", "square", "triangle", "star")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
# Row-major, so the grid cell of POSITIONS[i] is (row, col) = divmod(i, 3).
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
BACKGROUNDS = ("plain", "noisy", "gradient")
QUESTION_KINDS = ("color", "shape", "count", "position", "exists", "absent")
NONE_ANSWER = "there is none"
NUMBER_WORDS = ("zero", "one", "two", "three")

SUPERSAMPLE = 2  # draw at twice the size and shrink: anti-aliased edges at little cost
RADIUS_OF_CELL = {"small": 0.2, "large": 0.38}  # object radius as a fraction of a grid cell
# An object's centre is at least this far (in cells) inside its cell's edges in every
# style: the smallest radius, 0.2 less the widest jitter (15%), since the renderer keeps
# a whole object in its cell. Augmentation relies on it to keep position words true.
CENTRE_INSET = RADIUS_OF_CELL["small"] * 0.85
NOISE_SIGMA = 5.0  # grey levels: "lightly noisy", never enough to hide a shape
NOISE_GRAIN = 2  # pixels per noise cell; per-pixel noise made PNGs 5x larger (25 KB vs 5 KB)
TEXTURE_AMPLITUDE = 22.0  # grey levels either side of the base: black and white objects stay clear


@dataclass(frozen=True)
class Style:
    """One way of drawing and wording a scene; the scene itself does not depend on it."""

    name: str
    supersample: int  # drawn this many times larger, then shrunk: anti-aliased edges
    textured: bool  # stripes, checks or blotches behind the objects
    max_rotation: float  # degrees each shape may turn (0: upright, as flat draws them)
    radius_jitter: float  # an object's radius varies by this fraction either way
    rephrased: bool  # every caption template and the question rephrasings, not just the first


STYLES = {
    "flat": Style("flat", SUPERSAMPLE, False, 0.0, 0.1, False),
    "textured": Style("textured", 4, True, 0.0, 0.1, True),
    "rotated": Style("rotated", 4, False, 180.0, 0.15, True),
}
DEFAULT_STYLE = "flat"


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str
    position: str


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    kind: str


@dataclass(frozen=True)
class ShapesExample:
    name: str  # image path relative to the output folder
    image: Image.Image
    objects: tuple[ShapeObject, ...]
    caption: str
    questions: tuple[Question, ...]
    style: str = DEFAULT_STYLE
    box: tuple[int, int, int, int] | None = None  # the scene's place on a canvas


@dataclass(frozen=True)
class ShapesSummary:
    out_dir: Path
    n_images: int
    n_pairs: int
    n_questions: int
    questions_by_kind: dict[str, int]
    seed: int
    size: int
    background: str
    styles: tuple[str, ...] = (DEFAULT_STYLE,)
    canvas: int = 0  # side of the backdrop the scenes are placed on; 0: none


def parse_styles(text: str | Sequence[str]) -> tuple[str, ...]:
    """'flat,textured' (or a sequence) -> ('flat', 'textured'); unknown names are an error."""
    names = text.split(",") if isinstance(text, str) else list(text)
    styles = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    unknown = [name for name in styles if name not in STYLES]
    if unknown or not styles:
        raise UserInputError(
            f"unknown style {', '.join(map(repr, unknown)) or repr(text)}; choose one or more "
            f"of {', '.join(STYLES)}, comma-separated (e.g. --style flat,textured)"
        )
    return styles


# ---------------------------------------------------------------- attributes


def attributes_json(objects: Sequence[ShapeObject]) -> str:
    return json.dumps([asdict(obj) for obj in objects])


def parse_attributes(text: str) -> tuple[ShapeObject, ...]:
    return tuple(ShapeObject(**item) for item in json.loads(text))


def objects_key(objects: Sequence[ShapeObject]) -> tuple[tuple[str, str, str, str], ...]:
    """Canonical key: two scenes with equal keys hold exactly the same described objects."""
    return tuple(sorted((o.shape, o.color, o.size, o.position) for o in objects))


def sample_objects(rng: np.random.Generator) -> tuple[ShapeObject, ...]:
    count = int(rng.integers(1, 4))
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    colors = tuple(COLORS)
    # Distinct (colour, shape) pairs, so every object is named by its colour and shape alone.
    kinds = rng.choice(len(colors) * len(SHAPES), size=count, replace=False)
    sizes = rng.integers(0, len(SIZES), size=count)
    return tuple(
        ShapeObject(
            shape=SHAPES[kind % len(SHAPES)],
            color=colors[kind // len(SHAPES)],
            size=SIZES[size],
            position=POSITIONS[cell],
        )
        for cell, kind, size in zip(cells, kinds, sizes)
    )


# ---------------------------------------------------------------- rendering


def render_image(
    objects: Sequence[ShapeObject],
    size: int = 128,
    background: str = "plain",
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """Draw the objects on a background; `rng` jitters placement, tint and noise.

    Without an rng a fixed one is used, so the same call always gives the same pixels.
    """
    if background not in BACKGROUNDS:
        raise UserInputError(f"unknown background {background!r}; choose from {BACKGROUNDS}")
    rng = rng if rng is not None else np.random.default_rng(0)
    canvas = _background(background, size, rng)  # (size, size, 3) float32
    return _composite(canvas, _draw_objects(objects, size, rng, STYLES[DEFAULT_STYLE]))


def render_styled(
    objects: Sequence[ShapeObject], size: int, style: Style, rng: np.random.Generator
) -> Image.Image:
    """Draw the objects the way `style` does (any style but flat, which is `render_image`)."""
    if style.textured:
        canvas = _textured_background(size, rng)
    else:  # a plain or a gradient backdrop: no texture, but not flat's look either
        canvas = _background(_pick(("plain", "gradient"), rng), size, rng)
    return _composite(canvas, _draw_objects(objects, size, rng, style))


def render_on_canvas(
    objects: Sequence[ShapeObject], size: int, canvas: int, background: str, style: Style,
    rng: np.random.Generator,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The scene drawn `size` pixels wide at a random place of a canvas x canvas backdrop of
    its style; returns the image and the scene's box (x0, y0, x1, y1)."""
    if style.textured:
        backdrop = _textured_background(canvas, rng)
    elif style.name == DEFAULT_STYLE:
        backdrop = _background(background, canvas, rng)
    else:
        backdrop = _background(_pick(("plain", "gradient"), rng), canvas, rng)
    scene = _draw_objects(objects, size, rng, style)  # (size, size, 4)
    x0, y0 = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
    layer = np.zeros((canvas, canvas, 4), np.float32)
    layer[y0:y0 + size, x0:x0 + size] = scene
    return _composite(backdrop, layer), (x0, y0, x0 + size, y0 + size)


def _composite(canvas: np.ndarray, layer: np.ndarray) -> Image.Image:
    """canvas (size, size, 3) float32 grey levels under layer (size, size, 4) in [0, 1]."""
    alpha = layer[..., 3:]  # (size, size, 1)
    pixels = canvas * (1.0 - alpha) + layer[..., :3] * 255.0 * alpha
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    # Mid greys keep both white and black objects visible; a slight tint varies the scene.
    base = rng.uniform(90, 165) + rng.uniform(-8, 8, size=3)  # (3,)
    canvas = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if kind == "noisy":
        cells = -(-size // NOISE_GRAIN)
        noise = rng.normal(0.0, NOISE_SIGMA, size=(cells, cells, 1)).astype(np.float32)
        grain = noise.repeat(NOISE_GRAIN, 0).repeat(NOISE_GRAIN, 1)[:size, :size]  # (size, size, 1)
        canvas = canvas + grain
    elif kind == "gradient":
        other = rng.uniform(90, 165) + rng.uniform(-8, 8, size=3)  # (3,)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
        t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 0.5  # (size, size)
        canvas = canvas + t[..., None] * (other - base).astype(np.float32)
    return canvas


def _textured_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Stripes, checks or blotches in grey around a tinted mid grey: texture without colour,
    so no background can be read as one of the object colours."""
    canvas = _background("plain", size, rng)  # (size, size, 3)
    kind = _pick(("stripes", "checks", "blotches"), rng)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)  # (size, size) each
    period = rng.uniform(5, 14)  # pixels
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        pattern = np.sin(2 * np.pi * (np.cos(angle) * xs + np.sin(angle) * ys) / period)
    elif kind == "checks":
        pattern = np.where((xs // period + ys // period) % 2 == 0, 1.0, -1.0)
    else:  # smooth low-frequency noise: a coarse random grid, bilinearly enlarged
        grid = rng.uniform(-1, 1, size=(6, 6)).astype(np.float32)
        enlarged = Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BILINEAR)
        pattern = np.asarray(enlarged)
    texture = TEXTURE_AMPLITUDE * rng.uniform(0.6, 1.0) * pattern  # (size, size)
    return canvas + texture[..., None].astype(np.float32)


def _draw_objects(
    objects: Sequence[ShapeObject], size: int, rng: np.random.Generator, style: Style
) -> np.ndarray:
    scale = style.supersample
    big = size * scale
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cell = big / 3
    jitter_low, jitter_high = 1 - style.radius_jitter, 1 + style.radius_jitter
    for obj in objects:
        row, col = divmod(POSITIONS.index(obj.position), 3)
        radius = RADIUS_OF_CELL[obj.size] * cell * rng.uniform(jitter_low, jitter_high)
        angle = rng.uniform(-style.max_rotation, style.max_rotation) if style.max_rotation else 0.0
        reach = 1.0  # flat keeps its original placement rule
        if style.max_rotation:  # a turned square reaches further: shrink it to fit its cell
            reach = _reach(obj.shape)
            radius = min(radius, (cell / 2 - scale) / reach)
        slack = max(cell / 2 - radius * reach - scale, 0.0)  # keep the object inside its cell
        cx, cy = (np.array([col, row]) + 0.5) * cell + rng.uniform(-slack, slack, size=2)
        jitter = rng.integers(-12, 13, size=3)  # (3,) so one colour name covers nearby hues
        fill = tuple(int(v) for v in np.clip(np.array(COLORS[obj.color]) + jitter, 0, 255))
        _draw_shape(draw, obj.shape, cx, cy, radius, fill + (255,), angle)
    small = layer.reduce(scale)
    return np.asarray(small, dtype=np.float32) / 255.0  # (size, size, 4)


def _reach(shape: str) -> float:
    """How far the shape's outline goes from its centre, in radii, at the worst angle."""
    if shape == "circle":
        return 1.0
    vertices = np.array(_vertices(shape, 0.0, 0.0, 1.0, 0.0))  # (V, 2)
    return float(np.hypot(vertices[:, 0], vertices[:, 1]).max())


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, angle=0.0
):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square" and angle == 0.0:
        half = 0.85 * r  # a square of side 1.7r looks about as big as a circle of radius r
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif shape in SHAPES:
        draw.polygon(_vertices(shape, cx, cy, r, angle), fill=fill)
    else:
        raise UserInputError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _vertices(shape: str, cx: float, cy: float, r: float, angle: float) -> list:
    """The outline of a square, triangle or star, turned `angle` degrees about (cx, cy)."""
    if shape == "square":
        half = 0.85 * r
        points = [(cx - half, cy - half), (cx + half, cy - half),
                  (cx + half, cy + half), (cx - half, cy + half)]
    elif shape == "triangle":  # written as before styles existed, so flat's floats match
        points = _polygon(cx, cy + 0.15 * r, [1.15 * r] * 3)
    else:
        points = _polygon(cx, cy + 0.05 * r, [1.1 * r, 0.45 * r] * 5)
    if angle == 0.0:
        return points
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c)
            for x, y in points]


def _polygon(cx: float, cy: float, radii: Sequence[float]) -> list[tuple[float, float]]:
    """Vertices at equal angles starting straight up, with the given distance from the centre."""
    angles = -np.pi / 2 + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]


# ---------------------------------------------------------------- captions


def where(position: str) -> str:
    """'left' -> 'on the left', 'center' -> 'in the center', others 'at the …'."""
    if position in ("left", "right"):
        return f"on the {position}"
    if position == "center":
        return "in the center"
    return f"at the {position}"


def describe(obj: ShapeObject) -> str:
    return f"a {obj.size} {obj.color} {obj.shape}"


def a_or_an(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _plain(objects):
    return _join([f"{describe(o)} {where(o.position)}" for o in objects])


def _counted(objects):
    noun = "shape" if len(objects) == 1 else "shapes"
    return f"{NUMBER_WORDS[len(objects)]} {noun}: {_plain(objects)}"


def _picture(objects):
    return f"a picture of {_plain(objects)}"


def _there_is(objects):
    return f"there is {_plain(objects)}"


def _place_first(objects):
    return "; ".join(f"{where(o.position)}: {describe(o)}" for o in objects)


def _bare(objects):
    return ", ".join(f"{o.size} {o.color} {o.shape} {where(o.position)}" for o in objects)


def _is_at(objects):
    return _join([f"the {o.size} {o.color} {o.shape} is {where(o.position)}" for o in objects])


def _scene_with(objects):
    return f"a scene with {_plain(objects)}"


def _cornered(objects):
    """'in the top left corner' for the corners, the usual words elsewhere."""
    def place(position):
        return f"in the {position} corner" if " " in position else where(position)

    return _join([f"{describe(o)} {place(o.position)}" for o in objects])


# Several sentence forms, so a model cannot learn one template instead of the scene.
CAPTION_TEMPLATES: tuple[Callable[[Sequence[ShapeObject]], str], ...] = (
    _plain, _counted, _picture, _there_is, _place_first,
)  # fmt: skip
# More forms for the styles other than flat (flat keeps its five, so its captions are
# unchanged); each fits the shapes model's 32-token context with three objects.
STYLED_CAPTION_TEMPLATES = CAPTION_TEMPLATES + (_bare, _is_at, _scene_with, _cornered)


def make_caption(objects: Sequence[ShapeObject], template: int = 0) -> str:
    """A caption naming every object's size, colour, shape and position, in the given order.

    Templates 0-4 are flat's; 5-8 are the styled splits' extra forms.
    """
    if not objects:
        raise UserInputError("a caption needs at least one object")
    return STYLED_CAPTION_TEMPLATES[template % len(STYLED_CAPTION_TEMPLATES)](objects)


def parse_caption(caption: str) -> tuple[ShapeObject, ...]:
    """The objects a caption names, in order: the inverse of `make_caption`, for any template.

    Reads vocabulary words only, so it does not depend on the templates' wording; tests and
    the oracle encoder use it. Raises UserInputError when objects and positions do not pair.
    """
    found = _OBJECT_PHRASE.findall(caption)  # [(size, color, shape), ...]
    places = _PLACE_PHRASE.findall(caption)  # [position, ...]
    if not found or len(found) != len(places):
        raise UserInputError(
            f"cannot read {len(found)} objects at {len(places)} places: {caption!r}"
        )
    return tuple(ShapeObject(sh, c, sz, p) for (sz, c, sh), p in zip(found, places))


def _alternatives(words: Sequence[str]) -> str:
    # Longest first, so "top left" is not read as "top".
    return "|".join(sorted(words, key=len, reverse=True))


_OBJECT_PHRASE = re.compile(
    rf"\b({_alternatives(SIZES)}) ({_alternatives(tuple(COLORS))}) ({_alternatives(SHAPES)})\b"
)
_PLACE_PHRASE = re.compile(rf"\b(?:on|at|in) the ({_alternatives(POSITIONS)})\b")


# ---------------------------------------------------------------- questions


def make_questions(
    objects: Sequence[ShapeObject], rng: np.random.Generator
) -> tuple[Question, ...]:
    """One question of each kind, two for existence (one "yes", one "no")."""
    return (
        _color_question(objects, rng),
        _shape_question(objects, rng),
        Question("How many shapes are there?", NUMBER_WORDS[len(objects)], "count"),
        _position_question(objects, rng),
        _exists_question(objects, rng, present=True),
        _exists_question(objects, rng, present=False),
        _absent_question(objects, rng),
    )


def _pick(items: Sequence, rng: np.random.Generator):
    return items[int(rng.integers(len(items)))]


def _color_question(objects, rng) -> Question:
    obj = _pick(objects, rng)
    unique = sum(o.shape == obj.shape for o in objects) == 1
    name = f"the {obj.shape}" if unique else f"the {obj.shape} {where(obj.position)}"
    return Question(f"What color is {name}?", obj.color, "color")


def _shape_question(objects, rng) -> Question:
    obj = _pick(objects, rng)
    unique = sum(o.color == obj.color for o in objects) == 1
    subject = "Which shape" if unique else f"Which shape {where(obj.position)}"
    return Question(f"{subject} is {obj.color}?", obj.shape, "shape")


def _position_question(objects, rng) -> Question:
    obj = _pick(objects, rng)
    return Question(f"Where is the {obj.color} {obj.shape}?", obj.position, "position")


def _absent_pairs(objects, near_miss: bool) -> list[tuple[str, str]]:
    """(colour, shape) pairs not in the image; a near miss shares a colour or a shape with one."""
    present = {(o.color, o.shape) for o in objects}
    return [
        (color, shape)
        for color in COLORS
        for shape in SHAPES
        if (color, shape) not in present
        and (not near_miss or any(o.color == color or o.shape == shape for o in objects))
    ]


def _exists_question(objects, rng, present: bool) -> Question:
    if present:
        obj = _pick(objects, rng)
        color, shape, answer = obj.color, obj.shape, "yes"
    else:
        # Half are near misses (a red star beside a red circle): they test colour-shape binding.
        color, shape = _pick(_absent_pairs(objects, near_miss=bool(rng.integers(2))), rng)
        answer = "no"
    return Question(f"Is there {a_or_an(color)} {shape}?", answer, "exists")


def _absent_question(objects, rng) -> Question:
    """A question that presumes an object the image lacks; the honest answer is none."""
    missing_shapes = [s for s in SHAPES if all(o.shape != s for o in objects)]
    missing_colors = [c for c in COLORS if all(o.color != c for o in objects)]
    form = int(rng.integers(3))
    if form == 0 and missing_shapes:
        text = f"What color is the {_pick(missing_shapes, rng)}?"
    elif form == 1:
        text = f"Which shape is {_pick(missing_colors, rng)}?"
    else:
        color, shape = _pick(_absent_pairs(objects, near_miss=True), rng)
        text = f"Where is the {color} {shape}?"
    return Question(text, NONE_ANSWER, "absent")


# Other words for each question form (the first of each list is flat's own). Answers and
# the colour and shape words stay, so scoring and distractor choice are unchanged.
REPHRASINGS: tuple[tuple[re.Pattern, tuple[str, ...]], ...] = (
    (re.compile(r"^What color is (?P<x>.+)\?$"),
     ("What color is {x}?", "What is the color of {x}?", "Which color does {x} have?")),
    (re.compile(r"^Which shape (?P<where>.*?)is (?P<c>\w+)\?$"),
     ("Which shape {where}is {c}?", "What is the {c} shape {where}?", "Name the {c} shape {where}.")),
    (re.compile(r"^How many shapes are there\?$"),
     ("How many shapes are there?", "How many objects can you see?", "Count the shapes.")),
    (re.compile(r"^Where is the (?P<x>\w+ \w+)\?$"),
     ("Where is the {x}?", "In which part of the picture is the {x}?", "Where can the {x} be found?")),
    (re.compile(r"^Is there (?P<x>an? \w+ \w+)\?$"),
     ("Is there {x}?", "Can you see {x}?", "Does the picture show {x}?")),
)  # fmt: skip


def rephrase(question: Question, rng: np.random.Generator) -> Question:
    """The same question in one of its forms, chosen by `rng` (unknown forms stay as they are)."""
    for pattern, forms in REPHRASINGS:
        found = pattern.match(question.question)
        if found:
            text = _pick(forms, rng).format(**found.groupdict())
            text = re.sub(r" +([?.])", r"\1", text)  # "the red shape ?" when no place is named
            return Question(text, question.answer, question.kind)
    return question


# ---------------------------------------------------------------- a whole split


def image_name(seed: int, index: int, style: str = DEFAULT_STYLE) -> str:
    # The seed (and any style but flat) is in the name, so splits can share a folder.
    prefix = "" if style == DEFAULT_STYLE else f"{style}_"
    return f"images/{prefix}s{seed}_{index:06d}.png"


def make_example(
    seed: int, index: int, size: int = 128, background: str = "mixed", style: str = DEFAULT_STYLE,
    canvas: int = 0,
) -> ShapesExample:
    """Example `index` of split `seed`; its own RNG, so any example is reproducible alone.

    The objects come first from that RNG, so every style draws the same scene; with a
    `canvas` the scene is drawn small on a large backdrop (render_on_canvas)."""
    rng = np.random.default_rng([seed, index])  # distinct (seed, index) -> independent streams
    objects = sample_objects(rng)
    if canvas:
        if background == "mixed":
            background = "noisy" if rng.random() < 0.5 else "plain"
        styled = STYLES[parse_styles(style)[0]]
        image, box = render_on_canvas(objects, size, canvas, background, styled, rng)
        templates = CAPTION_TEMPLATES if style == DEFAULT_STYLE else STYLED_CAPTION_TEMPLATES
        caption = make_caption(objects, int(rng.integers(len(templates))))
        questions = make_questions(objects, rng)
        if style != DEFAULT_STYLE:
            questions = tuple(rephrase(q, rng) for q in questions)
        name = image_name(seed, index, style).replace("images/", "images/canvas_")
        return ShapesExample(name, image, objects, caption, questions, style, box)
    if style == DEFAULT_STYLE:
        if background == "mixed":
            background = "noisy" if rng.random() < 0.5 else "plain"
        image = render_image(objects, size, background, rng)
        caption = make_caption(objects, int(rng.integers(len(CAPTION_TEMPLATES))))
        questions = make_questions(objects, rng)
    else:
        image = render_styled(objects, size, STYLES[parse_styles(style)[0]], rng)
        caption = make_caption(objects, int(rng.integers(len(STYLED_CAPTION_TEMPLATES))))
        questions = tuple(rephrase(q, rng) for q in make_questions(objects, rng))
    name = image_name(seed, index, style)
    return ShapesExample(name, image, objects, caption, questions, style)


def write_shapes(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 128,
    background: str = "mixed",
    overwrite: bool = False,
    style: str | Sequence[str] = DEFAULT_STYLE,
    canvas: int = 0,
) -> ShapesSummary:
    """Write n images, pairs.parquet, questions.parquet and shapes.json under out_dir.

    Several styles ('flat,textured') take turns: example i is drawn in style i mod k.
    A `canvas` larger than `size` places each scene on a canvas x canvas backdrop, and
    pairs.parquet gains a `box` column (JSON [x0, y0, x1, y1]).
    """
    styles = parse_styles(style)
    _check_arguments(n, seed, size, background, styles)
    if canvas and canvas <= size:
        raise UserInputError(f"--canvas must be larger than --size ({size}) to place the "
                             f"scene on it, not {canvas}; 0 draws no canvas")
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    pairs, questions = [], []
    for index in range(n):
        example = make_example(seed, index, size, background, styles[index % len(styles)],
                               canvas)
        example.image.save(out / example.name, compress_level=6)  # 9: 4x slower, 4% smaller
        pairs.append(
            (example.name, example.caption, attributes_json(example.objects), example.style)
            + ((json.dumps(list(example.box)),) if canvas else ())
        )
        questions.extend(
            (example.name, q.question, q.answer, q.kind, example.style) for q in example.questions
        )
    _write_table(out / "pairs.parquet", ("image", "caption", "attributes", "style")
                 + (("box",) if canvas else ()), pairs)
    _write_table(
        out / "questions.parquet", ("image", "question", "answer", "kind", "style"), questions
    )
    counts = Counter(q[3] for q in questions)
    summary = ShapesSummary(
        out_dir=out,
        n_images=n,
        n_pairs=len(pairs),
        n_questions=len(questions),
        questions_by_kind={kind: counts[kind] for kind in QUESTION_KINDS},
        seed=seed,
        size=size,
        background=background,
        styles=styles,
        canvas=canvas,
    )
    _write_meta(out / "shapes.json", summary)
    return summary


def _check_arguments(n: int, seed: int, size: int, background: str, styles=(DEFAULT_STYLE,)):
    if n < 1:
        raise UserInputError(f"--n must be at least 1, got {n}")
    if seed < 0:
        raise UserInputError(f"--seed must be zero or positive, got {seed}")
    if size < 24:
        raise UserInputError(
            f"--size must be at least 24 pixels so shapes stay legible, got {size}"
        )
    if background not in BACKGROUNDS + ("mixed",):
        raise UserInputError(f"unknown background {background!r}; choose from mixed, {BACKGROUNDS}")
    if background != "mixed" and styles != (DEFAULT_STYLE,):
        raise UserInputError(
            f"--background {background} applies to the flat style only; the other styles "
            "draw their own backgrounds (drop --background, or use --style flat)"
        )


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserInputError(f"{out} is not empty; choose a new folder or pass overwrite")
        # Only what write_shapes itself writes, so a wrong path cannot lose other files.
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in ("pairs.parquet", "questions.parquet", "shapes.json"):
            (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)


def _write_table(path: Path, columns: Sequence[str], rows: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {
        name: pa.array([row[i] for row in rows], pa.string()) for i, name in enumerate(columns)
    }
    pq.write_table(pa.table(arrays), path)


def _write_meta(path: Path, summary: ShapesSummary) -> None:
    fields = {k: v for k, v in asdict(summary).items() if k != "out_dir"}
    meta = {"generator": "mmindex.data.shapes", "version": 1} | fields
    path.write_text(json.dumps(meta, indent=2) + "\n")
