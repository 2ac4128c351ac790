import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmindex.data.shapes import (
    CAPTION_TEMPLATES,
    COLORS,
    NONE_ANSWER,
    NUMBER_WORDS,
    POSITIONS,
    QUESTION_KINDS,
    SHAPES,
    ShapeObject,
    make_caption,
    make_example,
    objects_key,
    parse_attributes,
    parse_caption,
    render_image,
    where,
    write_shapes,
)
from mmindex.errors import UserInputError

SAMPLE_SHAPES = Path(__file__).resolve().parents[2] / "sample_data" / "shapes"


def pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def examples(seed: int, n: int, size: int = 48):
    # Small images: the questions and captions do not depend on the pixel size.
    return [make_example(seed, i, size=size) for i in range(n)]


# ---------------------------------------------------------------- determinism and splits


def test_same_seed_writes_identical_files(tmp_path):
    first = write_shapes(tmp_path / "a", n=12, seed=3)
    second = write_shapes(tmp_path / "b", n=12, seed=3)
    assert first.questions_by_kind == second.questions_by_kind
    for name in ("pairs.parquet", "questions.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))
    for image in sorted((tmp_path / "a" / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "b" / "images" / image.name).read_bytes()


def test_different_seeds_share_no_image():
    seed_0 = {pixel_digest(e.image) for e in examples(0, 60)}
    seed_1 = {pixel_digest(e.image) for e in examples(1, 60)}
    assert len(seed_0) == 60 and len(seed_1) == 60
    assert not seed_0 & seed_1


# ---------------------------------------------------------------- captions


def test_every_caption_names_each_object_with_colour_shape_and_place():
    for example in examples(11, 200):
        for obj in example.objects:
            assert f"{obj.size} {obj.color} {obj.shape}" in example.caption
            assert where(obj.position) in example.caption


def test_caption_parses_back_to_its_objects_for_every_template():
    objects = (
        ShapeObject("star", "orange", "small", "top left"),
        ShapeObject("circle", "white", "large", "left"),
        ShapeObject("square", "black", "small", "bottom"),
    )
    captions = {make_caption(objects, t) for t in range(len(CAPTION_TEMPLATES))}
    assert len(captions) == len(CAPTION_TEMPLATES)  # the templates really differ
    for caption in captions:
        assert parse_caption(caption) == objects


def test_generated_captions_use_several_templates():
    starts = {e.caption.split(" ")[0] for e in examples(4, 80)}
    assert len(starts) >= 4


def test_scenes_follow_the_rules():
    for example in examples(5, 300):
        objects = example.objects
        assert 1 <= len(objects) <= 3
        assert len({o.position for o in objects}) == len(objects)  # one object per cell
        assert len({(o.color, o.shape) for o in objects}) == len(objects)  # nameable
        assert all(o.shape in SHAPES and o.color in COLORS for o in objects)


# ---------------------------------------------------------------- rendering


def test_each_object_is_drawn_in_its_cell_and_empty_cells_stay_background():
    objects = (
        ShapeObject("circle", "red", "large", "top left"),
        ShapeObject("square", "blue", "small", "center"),
        ShapeObject("star", "yellow", "large", "bottom right"),
    )
    pixels = np.asarray(render_image(objects, size=96, background="plain")).astype(int)
    cell = 32
    for index, position in enumerate(POSITIONS):
        row, col = divmod(index, 3)
        patch = pixels[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
        for obj in objects:
            distance = np.abs(patch - np.array(COLORS[obj.color])).sum(axis=-1)
            near = int((distance < 45).sum())
            assert (near > 20) == (obj.position == position), (obj, position, near)


def test_shifted_rendering_changes_size_and_background_not_content():
    objects = (ShapeObject("triangle", "green", "large", "center"),)
    plain = render_image(objects, size=64, background="plain")
    shifted = render_image(objects, size=96, background="gradient")
    assert plain.size == (64, 64) and shifted.size == (96, 96)
    corners = np.asarray(shifted).astype(int)[[0, 0, -1, -1], [0, -1, 0, -1]]  # (4, 3)
    assert np.ptp(corners.sum(axis=1)) > 0  # a gradient, not one flat colour
    with pytest.raises(UserInputError):
        render_image(objects, background="stripes")


# ---------------------------------------------------------------- questions


def find(objects, color=None, shape=None, position=None):
    return [
        o
        for o in objects
        if (color is None or o.color == color)
        and (shape is None or o.shape == shape)
        and (position is None or where(o.position) == position)
    ]


def expected_answer(question: str, objects) -> str:
    """Answer a question from the attributes alone, with patterns written independently."""
    if m := re.fullmatch(r"What color is the (\w+)(?: (.+))?\?", question):
        hits = find(objects, shape=m[1], position=m[2])
        return hits[0].color if len(hits) == 1 else NONE_ANSWER if not hits else "ambiguous"
    if m := re.fullmatch(r"Which shape(?: (.+))? is (\w+)\?", question):
        hits = find(objects, color=m[2], position=m[1])
        return hits[0].shape if len(hits) == 1 else NONE_ANSWER if not hits else "ambiguous"
    if question == "How many shapes are there?":
        return NUMBER_WORDS[len(objects)]
    if m := re.fullmatch(r"Where is the (\w+) (\w+)\?", question):
        hits = find(objects, color=m[1], shape=m[2])
        return hits[0].position if len(hits) == 1 else NONE_ANSWER if not hits else "ambiguous"
    if m := re.fullmatch(r"Is there an? (\w+) (\w+)\?", question):
        return "yes" if find(objects, color=m[1], shape=m[2]) else "no"
    raise AssertionError(f"unknown question form: {question}")


def test_every_answer_follows_from_the_attributes():
    for example in examples(6, 300):
        for q in example.questions:
            assert q.answer == expected_answer(q.question, example.objects), (q, example.objects)


def test_question_kinds_and_answers_are_balanced():
    questions = [q for e in examples(8, 300) for q in e.questions]
    kinds = [q.kind for q in questions]
    assert set(kinds) == set(QUESTION_KINDS)
    exists = [q.answer for q in questions if q.kind == "exists"]
    assert exists.count("yes") == exists.count("no") == 300
    assert {q.answer for q in questions if q.kind == "absent"} == {NONE_ANSWER}
    assert {q.answer for q in questions if q.kind == "count"} == {"one", "two", "three"}
    assert len({q.answer for q in questions if q.kind == "position"}) == 9


# ---------------------------------------------------------------- files


def test_written_files_agree_with_each_other(tmp_path):
    summary = write_shapes(tmp_path, n=20, seed=9, size=64)
    pairs = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    questions = pq.read_table(tmp_path / "questions.parquet").to_pylist()
    assert summary.n_images == summary.n_pairs == len(pairs) == 20
    assert summary.n_questions == len(questions) == sum(summary.questions_by_kind.values())
    assert set(questions[0]) == {"image", "question", "answer", "kind", "style"}
    for row in pairs:
        assert Image.open(tmp_path / row["image"]).size == (64, 64)
        objects = parse_attributes(row["attributes"])
        assert objects_key(parse_caption(row["caption"])) == objects_key(objects)
    assert {q["image"] for q in questions} == {p["image"] for p in pairs}
    meta = json.loads((tmp_path / "shapes.json").read_text())
    assert (meta["seed"], meta["size"], meta["n_images"]) == (9, 64, 20)


def test_refuses_a_non_empty_folder_unless_told_to_overwrite(tmp_path):
    write_shapes(tmp_path, n=5, seed=1)
    with pytest.raises(UserInputError, match="not empty"):
        write_shapes(tmp_path, n=3, seed=2)
    write_shapes(tmp_path, n=3, seed=2, overwrite=True)
    assert len(list((tmp_path / "images").iterdir())) == 3


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"seed": -1}, {"size": 8}, {"background": "x"}])
def test_bad_arguments_are_user_errors(tmp_path, kwargs):
    with pytest.raises(UserInputError):
        write_shapes(tmp_path, **({"n": 2} | kwargs))


def test_committed_sample_split_matches_the_generator():
    meta = json.loads((SAMPLE_SHAPES / "shapes.json").read_text())
    rows = pq.read_table(SAMPLE_SHAPES / "pairs.parquet").to_pylist()
    assert len(rows) == meta["n_images"] == 300
    for index in (0, 1, 299):
        example = make_example(meta["seed"], index, meta["size"], meta["background"])
        assert rows[index]["image"] == example.name
        assert rows[index]["caption"] == example.caption
        stored = Image.open(SAMPLE_SHAPES / example.name)
        assert pixel_digest(stored.convert("RGB")) == pixel_digest(example.image)
