"""Several images per question: distractors that lack what the question names, and the two
ways of answering over them (one joint prompt, or each image alone then combined)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmindex.data.shapes import ShapeObject
from mmindex.errors import UserInputError
from mmindex.eval.vqa import (
    VqaRow,
    combine_answers,
    distractor_sets,
    evaluate_multi_image,
    named_objects,
)


def obj(color: str, shape: str) -> ShapeObject:
    return ShapeObject(shape=shape, color=color, size="small", position="center")


OBJECTS = {
    Path("/d/a.png").resolve(): (obj("yellow", "star"),),
    Path("/d/b.png").resolve(): (obj("red", "circle"), obj("blue", "star")),
    Path("/d/c.png").resolve(): (obj("red", "square"),),
    Path("/d/d.png").resolve(): (obj("green", "triangle"),),
    Path("/d/e.png").resolve(): (obj("white", "circle"),),
}


def test_combined_answer_is_the_one_thing_found():
    assert combine_answers(["there is none", "Yellow.", "there is none"]) == "yellow"
    assert combine_answers(["no", "yes", "no"]) == "yes"
    assert combine_answers(["no", "no"]) == "no"
    assert combine_answers(["there is none"] * 3) == "there is none"
    assert combine_answers(["red", "there is none", "blue"]) == "red | blue"  # conflicting


def test_named_objects_reads_the_colour_and_the_shape():
    assert named_objects("What color is the star?") == (None, "star")
    assert named_objects("Which shape is red?") == ("red", None)
    assert named_objects("Is there a red circle?") == ("red", "circle")
    assert named_objects("How many shapes are there?") == (None, None)


def test_distractors_lack_what_the_question_names():
    rows = [VqaRow(Path("/d/a.png"), "What color is the star?", "yellow", "color"),
            VqaRow(Path("/d/c.png"), "Is there a red circle?", "no", "exists"),
            VqaRow(Path("/d/a.png"), "How many shapes are there?", "one", "count")]
    sets = distractor_sets(rows, OBJECTS, k=3, seed=0)
    assert [row.kind for row, _ in sets] == ["color", "exists"]  # counting names nothing
    (_, star_set), (_, circle_set) = sets
    assert len(star_set) == 3 and Path("/d/a.png").resolve() in star_set
    assert Path("/d/b.png").resolve() not in star_set  # it holds a star
    assert Path("/d/b.png").resolve() not in circle_set  # it holds a red circle
    assert len(set(circle_set)) == 3
    places = {images.index(Path("/d/a.png").resolve())
              for seed in range(20) for _, images in distractor_sets(rows[:1], OBJECTS, 3, seed)}
    assert places == {0, 1, 2}  # the question's image is not always first
    assert distractor_sets(rows[:1], OBJECTS, k=5, seed=0) == []  # only 3 images lack a star


class OracleVlm:
    """What the evaluation asks of a Vlm besides answers (patched into answer_batch below:
    from one image as the data says, from several as if only the first were seen)."""

    device = torch.device("cpu")

    @staticmethod
    def tokenizer(text: str):
        return SimpleNamespace(input_ids=text.split())


def test_each_image_alone_answers_what_the_joint_prompt_misses(monkeypatch):
    from mmindex.eval import vqa

    rows = [VqaRow(Path("/d/a.png"), "What color is the star?", "yellow", "color"),
            VqaRow(Path("/d/b.png"), "Is there a red circle?", "yes", "exists")]
    sets = [[2, 0], [3, 1]]  # each row's own image second, after a distractor
    truth = {("What color is the star?", 0): "yellow", ("Is there a red circle?", 1): "yes"}

    def answer_batch(vlm, features, questions, images, max_new_tokens=8):
        return [truth.get((q, imgs[0]), "no" if q.startswith("Is") else "there is none")
                for q, imgs in zip(questions, images)]

    monkeypatch.setattr(vqa, "answer_batch", answer_batch)
    report = evaluate_multi_image(OracleVlm(), torch.zeros(4, 1, 1), rows, sets)
    assert report.modes["each"].overall == 1.0
    assert report.modes["joint"].overall == 0.0  # it looked at the distractor only
    with pytest.raises(UserInputError, match="joint"):
        evaluate_multi_image(OracleVlm(), torch.zeros(4, 1, 1), rows, sets, ["full"])

