"""make-shapes styles (issue 28): the same scenes drawn and worded differently, each style
deterministic for a seed, flat unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmindex.data.pairs import load_pairs
from mmindex.data.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    STYLED_CAPTION_TEMPLATES,
    STYLES,
    ShapeObject,
    make_caption,
    make_example,
    make_questions,
    objects_key,
    parse_attributes,
    parse_caption,
    parse_styles,
    rephrase,
    write_shapes,
)
from mmindex.errors import UserInputError

STYLED = [name for name in STYLES if name != "flat"]


def digest(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


@pytest.mark.parametrize("style", list(STYLES))
def test_a_style_is_deterministic_for_a_seed(style):
    first = [make_example(7, i, size=48, style=style) for i in range(6)]
    again = [make_example(7, i, size=48, style=style) for i in range(6)]
    other_seed = [make_example(8, i, size=48, style=style) for i in range(6)]
    assert [digest(e.image) for e in first] == [digest(e.image) for e in again]
    assert [(e.caption, e.questions) for e in first] == [(e.caption, e.questions) for e in again]
    assert not {digest(e.image) for e in first} & {digest(e.image) for e in other_seed}


def test_flat_is_the_default_and_every_style_draws_the_same_scene_differently():
    for index in range(8):
        default = make_example(3, index, size=48)
        flat = make_example(3, index, size=48, style="flat")
        assert digest(default.image) == digest(flat.image) and default.caption == flat.caption
        assert default.name == flat.name == f"images/s3_{index:06d}.png"
        for style in STYLED:
            styled = make_example(3, index, size=48, style=style)
            assert styled.objects == default.objects  # the scene does not depend on the style
            assert digest(styled.image) != digest(default.image)
            assert styled.name == f"images/{style}_s3_{index:06d}.png" and styled.style == style


def cell_of(pixels: np.ndarray, color: str) -> set[str]:
    """The grid cells holding pixels within a small distance of a named colour."""
    distance = np.abs(pixels.astype(int) - np.array(COLORS[color])).max(axis=2)  # (H, W)
    ys, xs = np.nonzero(distance <= 16)
    side = pixels.shape[0]
    return {POSITIONS[3 * min(int(y * 3 // side), 2) + min(int(x * 3 // side), 2)]
            for y, x in zip(ys, xs)}


@pytest.mark.parametrize("style", STYLED)
def test_styled_objects_stay_whole_inside_their_own_cell(style):
    """Turned shapes reach further than upright ones; the renderer shrinks them to fit, so
    "at the top left" stays true and a crop that keeps the cell keeps the object."""
    for index in range(40):
        example = make_example(11, index, size=96, style=style)
        pixels = np.asarray(example.image)
        for obj in example.objects:
            if any(o.color == obj.color for o in example.objects if o is not obj):
                continue  # two objects of one colour: the cells would mix
            assert cell_of(pixels, obj.color) == {obj.position}, (index, obj)


@pytest.fixture(scope="module")
def shapes_tokenizer():
    import open_clip

    from mmindex.models.registry import register_mmindex_configs

    register_mmindex_configs()
    return open_clip.get_tokenizer("mmindex-shapes-rn")


def test_styled_captions_parse_back_and_fit_the_shapes_models_context(shapes_tokenizer):
    # The longest words everywhere: the worst case for the 32-token context.
    objects = (
        ShapeObject("triangle", "purple", "large", "bottom right"),
        ShapeObject("triangle", "orange", "small", "bottom left"),
        ShapeObject("square", "yellow", "large", "top right"),
    )
    captions = [make_caption(objects, t) for t in range(len(STYLED_CAPTION_TEMPLATES))]
    assert len(set(captions)) == len(STYLED_CAPTION_TEMPLATES)
    for caption in captions:
        assert parse_caption(caption) == objects, caption
        tokens = shapes_tokenizer([caption])[0]
        assert tokens[-1] == 0, f"{caption!r} fills the whole context: it may be cut"


def test_rephrased_questions_keep_answer_kind_and_the_named_colour_and_shape():
    words = set(COLORS) | set(SHAPES)
    rng = np.random.default_rng(0)
    seen = set()
    for index in range(60):
        example = make_example(2, index, size=32)
        for question in make_questions(example.objects, np.random.default_rng(index)):
            other = rephrase(question, rng)
            assert (other.answer, other.kind) == (question.answer, question.kind)
            named = set(question.question.lower().rstrip("?").split()) & words
            assert set(other.question.lower().rstrip("?.").split()) & words == named
            assert "  " not in other.question and " ?" not in other.question
            seen.add(other.question.split()[0])
    assert len(seen) >= 6  # the rephrasings are really used, not only the original forms


def test_a_mix_of_styles_takes_turns_and_pairs_carry_the_style(tmp_path):
    summary = write_shapes(tmp_path, n=6, seed=4, size=32, style="flat,textured,rotated")
    assert summary.styles == ("flat", "textured", "rotated")
    rows = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert [r["style"] for r in rows] == ["flat", "textured", "rotated"] * 2
    questions = pq.read_table(tmp_path / "questions.parquet").to_pylist()
    assert {q["style"] for q in questions} == {"flat", "textured", "rotated"}
    pairs = load_pairs(tmp_path / "pairs.parquet")
    assert [p.style for p in pairs] == ["flat", "textured", "rotated"] * 2
    for pair in pairs:
        assert objects_key(parse_caption(pair.caption)) == objects_key(
            parse_attributes(pair.attributes)
        )


def test_unknown_style_and_a_background_for_other_styles_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="'wobbly'.*flat, textured, rotated"):
        parse_styles("flat,wobbly")
    with pytest.raises(UserInputError, match="unknown style"):
        write_shapes(tmp_path / "a", n=2, style="")
    with pytest.raises(UserInputError, match="flat style only"):
        write_shapes(tmp_path / "b", n=2, style="textured", background="noisy")
    assert parse_styles(" textured , flat,textured") == ("textured", "flat")
