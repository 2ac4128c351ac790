import hashlib
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmindex.data.drawing import GRID, Scene, SceneObject, format_program, parse_program
from mmindex.data.scenes import (
    COUNT_WORDS,
    RELATION_KINDS,
    make_example,
    parse_scene_attributes,
    render_scene,
    write_scenes,
)
from mmindex.data.shapes import COLORS, SIZES
from mmindex.errors import UserInputError


def examples(seed: int, n: int, size: int = 48):
    return [make_example(seed, i, size=size) for i in range(n)]


# ---------------------------------------------------------------- an independent oracle
# Answers recomputed from the objects' cells with the test's own reading of each phrasing:
# a phrasing the oracle does not know fails the test, so new templates must be checked too.

NAME = r"(\w+ \w+)"


def oracle(question: str, objects) -> str:
    by_name = {f"{o.color} {o.shape}": o for o in objects}
    for pattern, answer in _RULES:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(objects, *(by_name.get(g, g) for g in match.groups()))
    raise AssertionError(f"the oracle does not know the phrasing {question!r}")


def _yes(flag):
    return "yes" if flag else "no"


def _name(obj):
    return f"{obj.color} {obj.shape}"


def _size(obj):
    return SIZES.index(obj.size)


def _nearest(objects, target):
    others = sorted((math.dist((o.col, o.row), (target.col, target.row)), _name(o))
                    for o in objects if o is not target)
    return others[0][1]


def _count(objects, noun, relation, ref):
    tests = {"left of": lambda o: o.col < ref.col, "right of": lambda o: o.col > ref.col,
             "above": lambda o: o.row < ref.row, "below": lambda o: o.row > ref.row}
    word = noun.split(" ")[0]
    keep = (lambda o: True) if noun == "objects" else (
        (lambda o: o.color == word) if word in COLORS else (lambda o: o.shape + "s" == noun))
    return COUNT_WORDS[sum(1 for o in objects if o is not ref and keep(o) and tests[relation](o))]


_RULES = [
    (rf"Is the {NAME} left of the {NAME}\?", lambda s, a, b: _yes(a.col < b.col)),
    (rf"Is the {NAME} to the right of the {NAME}\?", lambda s, a, b: _yes(a.col > b.col)),
    (rf"Which is further left, the {NAME} or the {NAME}\?",
     lambda s, a, b: _name(min(a, b, key=lambda o: o.col))),
    (rf"Which is further right, the {NAME} or the {NAME}\?",
     lambda s, a, b: _name(max(a, b, key=lambda o: o.col))),
    (rf"Is the {NAME} above the {NAME}\?", lambda s, a, b: _yes(a.row < b.row)),
    (rf"Is the {NAME} below the {NAME}\?", lambda s, a, b: _yes(a.row > b.row)),
    (rf"Which is higher, the {NAME} or the {NAME}\?",
     lambda s, a, b: _name(min(a, b, key=lambda o: o.row))),
    (rf"Which is lower, the {NAME} or the {NAME}\?",
     lambda s, a, b: _name(max(a, b, key=lambda o: o.row))),
    (rf"(?:Which object is nearest to|What is closest to|Which shape is nearest) the {NAME}\?",
     lambda s, a: _nearest(s, a)),
    (rf"Is the {NAME} bigger than the {NAME}\?", lambda s, a, b: _yes(_size(a) > _size(b))),
    (rf"Is the {NAME} smaller than the {NAME}\?", lambda s, a, b: _yes(_size(a) < _size(b))),
    (rf"Which is bigger, the {NAME} or the {NAME}\?",
     lambda s, a, b: _name(max(a, b, key=_size))),
    (rf"Going from left to right, is the {NAME} between the {NAME} and the {NAME}\?",
     lambda s, a, b, c: _yes(min(b.col, c.col) < a.col < max(b.col, c.col))),
    (rf"Which object is between the {NAME} and the {NAME}\?",
     lambda s, b, c: " / ".join(_name(o) for o in s
                                if min(b.col, c.col) < o.col < max(b.col, c.col))),
    (rf"How many ([\w ]+?) are (left of|right of|above|below) the {NAME}\?",
     lambda s, noun, relation, ref: _count(s, noun, relation, ref)),
]


# ---------------------------------------------------------------- tests


def test_every_answer_agrees_with_the_oracle_and_every_relation_is_asked():
    kinds = set()
    for example in examples(3, 300):
        for q in example.questions:
            assert oracle(q.question, example.scene.objects) == q.answer, q
            kinds.add(q.kind)
    assert kinds == set(RELATION_KINDS)


def test_nearest_is_clearly_nearest():
    for example in examples(4, 200):
        for q in example.questions:
            if q.kind != "nearest":
                continue
            target = next(o for o in example.scene.objects if q.question.endswith(
                f"the {o.color} {o.shape}?"))
            gaps = sorted(math.dist((o.col, o.row), (target.col, target.row))
                          for o in example.scene.objects if o is not target)
            assert len(gaps) == 1 or gaps[1] >= 1.2 * gaps[0]


def test_phrasing_varies_and_answers_are_not_one_word():
    questions = [q for e in examples(5, 200) for q in e.questions]
    for kind in ("left_right", "above_below", "bigger", "nearest"):
        starts = {" ".join(q.question.split()[:2]) for q in questions if q.kind == kind}
        assert len(starts) >= 2, kind
    for kind in ("left_right", "above_below", "count_where"):
        answers = [q.answer for q in questions if q.kind == kind]
        top = max(answers.count(a) for a in set(answers))
        assert top / len(answers) < 0.6, (kind, top / len(answers))  # no answer dominates


def test_scenes_follow_the_rules():
    for example in examples(6, 300):
        objects = example.scene.objects
        assert 2 <= len(objects) <= 5
        assert len({o.col for o in objects}) == len(objects)  # one object per column
        assert len({o.row for o in objects}) == len(objects)  # and per row
        assert len({(o.color, o.shape) for o in objects}) == len(objects)  # nameable
        assert [o.col for o in objects] == sorted(o.col for o in objects)


def test_program_is_the_scene_and_parses_back():
    for example in examples(7, 50):
        assert parse_program(example.program) == example.scene
        assert format_program(parse_program(example.program)) == example.program


def test_each_object_is_drawn_in_its_cell():
    scene = Scene((SceneObject("circle", "red", "large", 0, 4),
                   SceneObject("square", "blue", "large", 2, 2),
                   SceneObject("star", "yellow", "large", 4, 0)))
    pixels = np.asarray(render_scene(scene, size=100)).astype(int)
    cell = 100 // GRID
    for obj in scene.objects:
        for col in range(GRID):
            for row in range(GRID):
                patch = pixels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]
                near = int((np.abs(patch - np.array(COLORS[obj.color])).sum(-1) < 45).sum())
                assert (near > 20) == ((col, row) == (obj.col, obj.row)), (obj, col, row)


def test_same_seed_same_files_and_other_seed_other_images(tmp_path):
    first = write_scenes(tmp_path / "a", n=6, seed=2, size=48)
    write_scenes(tmp_path / "b", n=6, seed=2, size=48)
    write_scenes(tmp_path / "c", n=6, seed=3, size=48)
    for name in ("pairs.parquet", "questions.parquet", "code.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))
    digests = {d: {hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in (tmp_path / d / "images").iterdir()} for d in "abc"}
    assert digests["a"] == digests["b"] and not digests["a"] & digests["c"]
    assert first.n_questions == sum(first.questions_by_kind.values())


def test_written_tables_hold_the_scene(tmp_path):
    write_scenes(tmp_path / "s", n=5, seed=1, size=48)
    pairs = pq.read_table(tmp_path / "s" / "pairs.parquet").to_pylist()
    code = {r["image"]: r for r in pq.read_table(tmp_path / "s" / "code.parquet").to_pylist()}
    for pair in pairs:
        scene = parse_scene_attributes(pair["attributes"])
        assert parse_program(code[pair["image"]]["answer"]) == scene
        assert code[pair["image"]]["kind"] == "code"
    both = pq.read_table(tmp_path / "s" / "qa_and_code.parquet").num_rows
    questions = pq.read_table(tmp_path / "s" / "questions.parquet").num_rows
    assert both == questions + len(pairs)


@pytest.mark.parametrize("kwargs, words", [({"n": 0}, "--n"), ({"seed": -1}, "--seed"),
                                           ({"size": 16}, "--size"),
                                           ({"background": "stripes"}, "stripes")])
def test_bad_arguments_name_the_value(tmp_path, kwargs, words):
    with pytest.raises(UserInputError, match=words):
        write_scenes(tmp_path / "x", **({"n": 2} | kwargs))
