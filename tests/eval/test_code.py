import numpy as np
import pytest

from mmindex.data import charts, scenes
from mmindex.data.drawing import ProgramError, Scene, SceneObject, format_program, parse_program
from mmindex.errors import UserInputError
from mmindex.eval.code import VALUE_TOLERANCE, score_program, score_programs

SCENE = """scene
large red circle at 0 3
small blue star at 2 1
large green square at 4 0"""

BARS = """bar chart
red 42
blue 17
green 88"""

GARBAGE = [
    "",
    "I cannot draw this.",
    "scene",  # draws nothing
    "scene\nhuge red circle at 1 1",  # no such size
    "scene\nlarge pink circle at 1 1",  # no such colour
    "scene\nlarge red circle at 9 9",  # off the board
    "scene\nlarge red circle 1 1",  # no 'at'
    "bar chart\nred -5",  # below the axis
    "bar chart\nred 40\nred 50",  # one label twice
    "bar chart\nmonday 40",  # a line label in a bar chart
    "pie chart\nred 0\nblue 0",  # nothing to draw
    "area chart\nred 4",
    "import os\nos.system('echo hi')",
    "scene\n" + "\n".join(f"small red circle at {i % 5} {i % 5}" for i in range(9)),  # runaway
]


def generated_programs():
    return ([scenes.make_example(9, i, size=32).program for i in range(40)]
            + [charts.make_example(9, i, size=32).program for i in range(40)])


def test_every_generated_program_round_trips_and_scores_one_against_itself():
    for program in generated_programs():
        assert format_program(parse_program(program)) == program
        score = score_program(program, program)
        assert score.parsed and score.score == 1.0, program


def test_case_and_spacing_do_not_matter_nor_the_order_of_objects():
    shuffled = "SCENE\n  large green square at 4 0\nsmall  blue star at 2 1\nlarge red circle at 0 3\n"
    assert score_program(SCENE, shuffled).score == 1.0


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_is_unparseable(garbage):
    with pytest.raises(ProgramError):
        parse_program(garbage)
    score = score_program(SCENE, garbage)
    assert not score.parsed and score.score == 0.0 and score.error


def test_parse_errors_name_the_line_and_the_word():
    with pytest.raises(UserInputError, match=r"line 3: unknown colour 'pink'"):
        parse_program("scene\nlarge red circle at 0 0\nsmall pink star at 1 1")


@pytest.mark.parametrize("wrong, expected, attribute", [
    (SCENE.replace("large red circle", "small red circle"), 2 / 3, "size"),
    (SCENE.replace("blue star", "yellow star"), 2 / 3, "color"),
    (SCENE.replace("green square", "green triangle"), 2 / 3, "shape"),
    (SCENE.replace("at 2 1", "at 3 1"), 2 / 3, "position"),
    (SCENE + "\nsmall black circle at 1 4", 3 / 4, None),  # one object too many
    ("\n".join(SCENE.splitlines()[:2]), 1 / 3, None),  # two missing
])
def test_a_wrong_scene_scores_less_by_what_it_gets_wrong(wrong, expected, attribute):
    score = score_program(SCENE, wrong)
    assert score.parsed and score.score == pytest.approx(expected)
    if attribute:
        assert score.attributes[attribute] == pytest.approx(2 / 3)
        others = [a for a in ("shape", "color", "size", "position") if a != attribute]
        assert all(score.attributes[a] == 1.0 for a in others)


def test_chart_values_count_within_the_tolerance_only():
    close = BARS.replace("42", str(42 + int(VALUE_TOLERANCE)))
    far = BARS.replace("42", str(42 + int(VALUE_TOLERANCE) + 1))
    assert score_program(BARS, close).score == 1.0
    assert score_program(BARS, far).score == pytest.approx(2 / 3)
    assert score_program(BARS, BARS.replace("bar chart", "pie chart")).score == 0.0
    assert score_program(BARS, SCENE).score == 0.0
    assert score_program(SCENE, BARS).score == 0.0
    missing = score_program(BARS, "bar chart\nred 42\nblue 17")
    assert missing.score == pytest.approx(2 / 3) and missing.attributes["count"] == 0.0


def test_perturbed_generated_scenes_score_less():
    rng = np.random.default_rng(0)
    for i in range(30):
        scene = scenes.make_example(11, i, size=32).scene
        objects = list(scene.objects)
        k = int(rng.integers(len(objects)))
        o = objects[k]
        objects[k] = SceneObject(o.shape, o.color, o.size, o.col, (o.row + 1) % 5)
        perturbed = format_program(Scene(tuple(objects)))
        expected = (len(objects) - 1) / len(objects)
        assert score_program(format_program(scene), perturbed).score == pytest.approx(expected)


def test_report_counts_unparseable_and_perfect_programs():
    targets = [SCENE, SCENE, BARS, BARS]
    written = [SCENE, "nonsense", BARS.replace("17", "40"), BARS]
    report = score_programs(targets, written)
    assert report.n == 4 and report.unparseable == 0.25
    low, high = report.unparseable_interval
    assert low < 0.25 < high
    assert report.perfect == 0.5
    assert report.mean_score == pytest.approx((1 + 0 + 2 / 3 + 1) / 4)
    assert report.by_domain["scene"]["score"] == pytest.approx(0.5)
    assert report.by_domain["chart"]["values"] == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(UserInputError, match="3 programs for 4 targets"):
        score_programs(targets, written[:3])
