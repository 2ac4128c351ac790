"""Spatial scenes: 2-5 shapes whose relations hold exactly, and questions about them.

Objects stand on a GRID x GRID board, each in its own column and its own row, so for any
two of them "left of" and "above" have one answer with at least a cell between centres.
Within a scene no two objects share colour and shape, so "the red circle" names one object.
Every answer is computed from the objects (`left_of`, `nearest`, ...), never from pixels;
the question kind is the relation, so `eval vqa` reports accuracy per relation.

`make-scenes` writes the same tables as `make-shapes` (pairs.parquet, questions.parquet)
plus code.parquet: for each image, the drawing program that drew it (kind "code").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmindex.data.drawing import GRID, Scene, SceneObject, format_program, render_scene
from mmindex.data.shapes import COLORS, SHAPES, SIZES, Question, _pick
from mmindex.data.splits import (
    CODE_KIND,
    SplitSummary,
    check_split_arguments,
    prepare_out_dir,
    write_split,
)
from mmindex.errors import UserInputError

RELATION_KINDS = ("left_right", "above_below", "nearest", "bigger", "between", "count_where")
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five")
CODE_PROMPT = "Write the drawing program for this scene."
NEAREST_MARGIN = 1.2  # the nearest object is at least this much closer than the next one
BACKGROUNDS = ("plain", "noisy")


@dataclass(frozen=True)
class SceneExample:
    name: str
    image: object  # PIL image
    scene: Scene
    caption: str
    questions: tuple[Question, ...]
    program: str


# ---------------------------------------------------------------- relations (the ground truth)


def left_of(a: SceneObject, b: SceneObject) -> bool:
    return a.col < b.col


def above(a: SceneObject, b: SceneObject) -> bool:
    return a.row < b.row  # rows count from the top


def bigger(a: SceneObject, b: SceneObject) -> bool:
    return SIZES.index(a.size) > SIZES.index(b.size)


def distance(a: SceneObject, b: SceneObject) -> float:
    return math.hypot(a.col - b.col, a.row - b.row)


def nearest(target: SceneObject, objects: Sequence[SceneObject]) -> SceneObject | None:
    """The object nearest to `target`, or None when the nearest is not clearly nearest."""
    others = sorted((o for o in objects if o != target), key=lambda o: distance(target, o))
    if len(others) > 1 and distance(target, others[1]) < NEAREST_MARGIN * distance(target,
                                                                                   others[0]):
        return None
    return others[0] if others else None


def between(a: SceneObject, b: SceneObject, c: SceneObject) -> bool:
    """Whether a stands between b and c going from left to right."""
    return min(b.col, c.col) < a.col < max(b.col, c.col)


# ---------------------------------------------------------------- sampling


def sample_scene(rng: np.random.Generator) -> Scene:
    count = int(rng.integers(2, 6))
    cols = rng.choice(GRID, size=count, replace=False)
    rows = rng.choice(GRID, size=count, replace=False)
    colors = tuple(COLORS)
    kinds = rng.choice(len(colors) * len(SHAPES), size=count, replace=False)
    sizes = rng.integers(0, len(SIZES), size=count)
    objects = [SceneObject(SHAPES[k % len(SHAPES)], colors[k // len(SHAPES)], SIZES[s],
                           int(c), int(r)) for c, r, k, s in zip(cols, rows, kinds, sizes)]
    # Left to right: the order programs list objects in, so one scene has one program.
    return Scene(tuple(sorted(objects, key=lambda o: o.col)))


# ---------------------------------------------------------------- captions


def _from_left(scene: Scene) -> str:
    return "from left to right: " + ", ".join(_described(o) for o in scene.objects)


def _from_top(scene: Scene) -> str:
    ordered = sorted(scene.objects, key=lambda o: o.row)
    return "from top to bottom: " + ", ".join(_described(o) for o in ordered)


def _counted(scene: Scene) -> str:
    return f"{COUNT_WORDS[len(scene.objects)]} objects, left to right: " + ", ".join(
        _described(o) for o in scene.objects)


def _described(obj: SceneObject) -> str:
    return f"{obj.size} {obj.color} {obj.shape}"


CAPTION_TEMPLATES: tuple[Callable[[Scene], str], ...] = (_from_left, _from_top, _counted)


def make_caption(scene: Scene, template: int = 0) -> str:
    return CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)](scene)


# ---------------------------------------------------------------- questions


def make_questions(scene: Scene, rng: np.random.Generator) -> tuple[Question, ...]:
    """One question per relation the scene allows (between needs three objects, nearest a
    clear nearest), phrased in one of several ways."""
    makers = (_left_right, _above_below, _nearest, _bigger, _between, _count_where)
    asked = (maker(scene.objects, rng) for maker in makers)
    return tuple(q for q in asked if q is not None)


def _two(objects, rng) -> tuple[SceneObject, SceneObject]:
    first, second = rng.choice(len(objects), size=2, replace=False)
    return objects[int(first)], objects[int(second)]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# Per axis: the relation, then the question forms "a R b?", "a R' b?" (the converse),
# "which is more R?" and "which is more R'?"; one maker asks them all.
_AXES = {
    "left_right": (left_of, "Is the {a} left of the {b}?",
                   "Is the {a} to the right of the {b}?",
                   "Which is further left, the {a} or the {b}?",
                   "Which is further right, the {a} or the {b}?"),
    "above_below": (above, "Is the {a} above the {b}?",
                    "Is the {a} below the {b}?", "Which is higher, the {a} or the {b}?",
                    "Which is lower, the {a} or the {b}?"),
}


def _axis_question(kind: str, objects, rng) -> Question:
    holds, *forms = _AXES[kind]
    a, b = _two(objects, rng)
    form = int(rng.integers(4))
    first = a if holds(a, b) else b  # the one further left / higher
    answers = (_yes_no(holds(a, b)), _yes_no(holds(b, a)), first.name,
               (b if first is a else a).name)
    return Question(forms[form].format(a=a.name, b=b.name), answers[form], kind)


def _left_right(objects, rng) -> Question:
    return _axis_question("left_right", objects, rng)


def _above_below(objects, rng) -> Question:
    return _axis_question("above_below", objects, rng)


def _nearest(objects, rng) -> Question | None:
    candidates = [o for o in objects if nearest(o, objects) is not None]
    if not candidates:
        return None
    target = _pick(candidates, rng)
    text = _pick(("Which object is nearest to the {}?", "What is closest to the {}?",
                  "Which shape is nearest the {}?"), rng).format(target.name)
    return Question(text, nearest(target, objects).name, "nearest")


def _bigger(objects, rng) -> Question:
    a, b = _two(objects, rng)
    form = int(rng.integers(3))
    if form == 2 and a.size != b.size:
        answer = a if bigger(a, b) else b
        return Question(f"Which is bigger, the {a.name} or the {b.name}?", answer.name,
                        "bigger")
    if form == 1:
        return Question(f"Is the {a.name} smaller than the {b.name}?", _yes_no(bigger(b, a)),
                        "bigger")
    return Question(f"Is the {a.name} bigger than the {b.name}?", _yes_no(bigger(a, b)),
                    "bigger")


def _between(objects, rng) -> Question | None:
    if len(objects) < 3:
        return None
    a, b, c = (objects[int(i)] for i in rng.choice(len(objects), size=3, replace=False))
    inside = [o for o in objects if o not in (b, c) and between(o, b, c)]
    if len(inside) == 1 and rng.random() < 0.5:
        return Question(f"Which object is between the {b.name} and the {c.name}?",
                        inside[0].name, "between")
    return Question(f"Going from left to right, is the {a.name} between the {b.name} and "
                    f"the {c.name}?", _yes_no(between(a, b, c)), "between")


_COUNT_RELATIONS = {
    "left of": lambda o, ref: left_of(o, ref),
    "right of": lambda o, ref: left_of(ref, o),
    "above": lambda o, ref: above(o, ref),
    "below": lambda o, ref: above(ref, o),
}


def _count_where(objects, rng) -> Question:
    """How many objects of a colour or shape (or any) stand in a relation to a named one."""
    reference = _pick(objects, rng)
    relation = _pick(tuple(_COUNT_RELATIONS), rng)
    filter_by = int(rng.integers(3))
    related = [o for o in objects if o != reference
               and _COUNT_RELATIONS[relation](o, reference)]
    # Mostly name a colour or shape that some related object has, so "zero" is not the
    # answer to most questions (a prior that says "zero" would then score well).
    pool = related if related and rng.random() < 0.7 else [o for o in objects
                                                            if o != reference]
    other = _pick(pool, rng)
    if filter_by == 0:
        noun, keep = f"{other.color} objects", lambda o: o.color == other.color
    elif filter_by == 1:
        noun, keep = f"{other.shape}s", lambda o: o.shape == other.shape
    else:
        noun, keep = "objects", lambda o: True
    count = sum(1 for o in objects if o != reference and keep(o)
                and _COUNT_RELATIONS[relation](o, reference))
    return Question(f"How many {noun} are {relation} the {reference.name}?", COUNT_WORDS[count],
                    "count_where")


# ---------------------------------------------------------------- a whole split


def image_name(seed: int, index: int) -> str:
    return f"images/r{seed}_{index:06d}.png"


def make_example(seed: int, index: int, size: int = 128, background: str = "mixed"
                 ) -> SceneExample:
    """Example `index` of split `seed`, reproducible alone (its own RNG)."""
    rng = np.random.default_rng([seed, index, 23])  # 23: not the shapes split's stream
    scene = sample_scene(rng)
    if background == "mixed":
        background = _pick(BACKGROUNDS, rng)
    image = render_scene(scene, size, background, rng)
    caption = make_caption(scene, int(rng.integers(len(CAPTION_TEMPLATES))))
    return SceneExample(image_name(seed, index), image, scene, caption,
                        make_questions(scene, rng), format_program(scene))


def scene_attributes(scene: Scene) -> str:
    return json.dumps([asdict(o) for o in scene.objects])


def parse_scene_attributes(text: str) -> Scene:
    return Scene(tuple(SceneObject(**item) for item in json.loads(text)))


def write_scenes(out_dir: str | Path, n: int, seed: int = 0, size: int = 128,
                 background: str = "mixed", overwrite: bool = False) -> SplitSummary:
    """n scene images with pairs.parquet, questions.parquet, code.parquet and scenes.json."""
    check_split_arguments(n, seed, size)
    if background not in BACKGROUNDS + ("mixed",):
        raise UserInputError(f"unknown background {background!r}; choose from mixed, "
                             f"{', '.join(BACKGROUNDS)}")
    out = prepare_out_dir(Path(out_dir), overwrite, "scenes.json")
    examples = (make_example(seed, i, size, background) for i in range(n))
    rows = ((e.name, e.image, e.caption, scene_attributes(e.scene), e.questions,
             Question(CODE_PROMPT, e.program, CODE_KIND)) for e in examples)
    return write_split(out, rows, RELATION_KINDS,
                       {"generator": "mmindex.data.scenes", "version": 1, "seed": seed,
                        "size": size, "background": background, "grid": GRID},
                       "scenes.json")
