"""End to end on the tiny models: train a projector, ask an index, abstain, calibrate, caption,
and the VQA evaluation with its baselines."""

import json
from dataclasses import replace

import pytest

pytest.importorskip("transformers")
from typer.testing import CliRunner

from mmindex.testing import TINY
from mmindex import IngestConfig, ingest, open_index
from mmindex.errors import ModelMismatchError, UserInputError
from mmindex.ask.answerers import ProjectorAnswerer
from mmindex.ask.generator import NOT_FOUND, AskConfig, Generator, best_threshold, calibrate
from mmindex.models.llm import TEST_TINY, load_llm
from mmindex.models.vlm import load_vlm
from mmindex.train.projector import TrainProjectorConfig, train_projector


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmindex.data.shapes import write_shapes

    root = tmp_path_factory.mktemp("shapes")
    write_shapes(root / "data", n=8, seed=3, size=32)
    ingest(IngestConfig(roots=(root / "data" / "images",), index_dir=root / "idx", model=TINY,
                        precision="fp32"))
    config = TrainProjectorConfig(vision_model=TINY, out_dir=root / "idx" / "projector",
                                  captions=root / "data" / "pairs.parquet",
                                  questions=root / "data" / "questions.parquet", llm=TEST_TINY,
                                  image_tokens=4, caption_steps=3, qa_steps=4, batch_size=4,
                                  distractor_rate=0.5)
    report = train_projector(config)
    return root, report


def generator(root) -> Generator:
    index = open_index(root / "idx")
    vlm = load_vlm(root / "idx" / "projector", load_llm(TEST_TINY), index.encoder.info.fingerprint)
    return Generator(index, ProjectorAnswerer(vlm, index.encoder))


def test_train_projector_runs_both_stages_and_writes_a_checkpoint(shapes):
    root, report = shapes
    assert [(s.name, s.steps) for s in report.stages] == [("captions", 3), ("qa", 4)]
    assert report.n_images == 8
    config = json.loads((root / "idx" / "projector" / "config.json").read_text())
    assert config["image_tokens"] == 4 and config["llm"] == TEST_TINY
    assert config["vision_model"] == TINY and config["train"]["stages"][1]["name"] == "qa"
    for stage in report.stages:  # fewer than CURVE_STEPS steps: one point, their mean
        assert stage.loss_curve == [pytest.approx(stage.last_loss)]
    assert (root / "idx" / "projector" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ask_cites_the_retrieved_images_with_scores(shapes):
    root, _ = shapes
    answer = generator(root).ask("a red circle", AskConfig(k=2, threshold=-1.0,
                                                            max_new_tokens=4))
    assert not answer.abstained
    assert [c.tag for c in answer.citations] == [1, 2]
    assert all(c.path.endswith(".png") for c in answer.citations)
    assert answer.citations[0].score >= answer.citations[1].score
    assert answer.best_score == answer.citations[0].score


def test_ask_streams_the_answer_text_as_it_is_generated(shapes):
    root, _ = shapes
    pieces = []
    answer = generator(root).ask("a red circle", AskConfig(k=2, threshold=-1.0,
                                                            max_new_tokens=12), on_text=pieces.append)
    assert answer.text and pieces
    assert "".join(pieces).strip() == answer.text  # the pieces are the answer, in order


def test_ask_answers_each_image_alone_unless_joint(shapes, monkeypatch):
    root, _ = shapes
    gen = generator(root)
    shown = []  # the images of each prompt
    answer_one = gen.answerer.answer
    monkeypatch.setattr(gen.answerer, "answer", lambda prompt, images, *rest:
                        shown.append(len(images)) or answer_one(prompt, images, *rest))
    each = gen.ask("a red circle", AskConfig(k=3, threshold=-1.0, max_new_tokens=4))
    assert shown == [1, 1, 1]
    assert each.text.split("\n") == [f"[{c.tag}] {c.answer}" for c in each.citations]
    shown.clear()
    joint = gen.ask("a red circle", AskConfig(k=3, threshold=-1.0, max_new_tokens=4,
                                              joint=True))
    assert shown == [3] and [c.answer for c in joint.citations] == [None] * 3


def test_each_images_line_is_what_that_image_answers_alone(shapes):
    root, _ = shapes
    gen = generator(root)
    each = gen.ask("a red circle", AskConfig(k=2, threshold=-1.0, max_new_tokens=6))
    for c in each.citations:
        alone = gen.ask("a red circle", AskConfig(k=1, threshold=-1.0, max_new_tokens=6,
                                                  where=f"path = '{c.path}'"))
        assert [a.path for a in alone.citations] == [c.path]
        assert alone.citations[0].answer == c.answer


def test_each_images_answer_streams_exactly_the_answer_text(shapes):
    root, _ = shapes
    pieces = []
    answer = generator(root).ask("a red circle", AskConfig(k=3, threshold=-1.0,
                                                            max_new_tokens=12), on_text=pieces.append)
    assert "".join(pieces) == answer.text and answer.text.startswith("[1] ")


def test_streamed_answers_are_trimmed_as_the_answer_text_is():
    from mmindex.ask.generator import _trimmed

    pieces = []
    forward = _trimmed(pieces.append)
    for text in ["  ", " ab", " ", "c ", " \n"]:
        forward(text)
    assert "".join(pieces) == "ab c"


def test_ask_abstains_below_the_threshold(shapes):
    root, _ = shapes
    pieces = []
    answer = generator(root).ask("a red circle", AskConfig(k=3, threshold=1.01),
                                 on_text=pieces.append)
    assert answer.abstained and answer.text == NOT_FOUND and answer.citations == ()
    assert answer.new_tokens == 0 and pieces == []


def test_ask_abstains_when_the_filter_leaves_nothing(shapes):
    root, _ = shapes
    answer = generator(root).ask("a red circle", AskConfig(where="width < 0", threshold=-1.0))
    assert answer.abstained and answer.best_score is None


def test_calibration_is_stored_per_index_and_used(shapes, tmp_path):
    root, _ = shapes
    gen = generator(root)
    result = calibrate(gen.index, ["a small red circle at the top"], ["a bowl of ramen"])
    assert (root / "idx" / "ask.json").is_file()
    answer = gen.ask("a small red circle at the top", AskConfig(max_new_tokens=2))
    assert answer.threshold == pytest.approx(result.threshold)
    stored = json.loads((root / "idx" / "ask.json").read_text())
    (root / "idx" / "ask.json").write_text(json.dumps(stored | {"fingerprint": "other"}))
    with pytest.raises(UserInputError, match="calibrated for another model"):
        gen.ask("a red circle")
    (root / "idx" / "ask.json").unlink()


def test_best_threshold_separates_scores():
    import numpy as np

    threshold, accuracy = best_threshold(np.array([0.8, 0.9]), np.array([0.1, 0.3]))
    assert 0.3 < threshold < 0.8 and accuracy == 1.0
    threshold, accuracy = best_threshold(np.array([0.5]), np.array([0.6]))
    assert accuracy == 0.5


def test_caption_describes_one_image(shapes):
    root, _ = shapes
    image = next((root / "data" / "images").glob("*.png"))
    assert isinstance(generator(root).caption(image, max_new_tokens=3), str)


def test_projector_for_another_vision_model_is_refused(shapes):
    root, _ = shapes
    with pytest.raises(ModelMismatchError, match="index's model has fingerprint"):
        load_vlm(root / "idx" / "projector", load_llm(TEST_TINY), "0123456789abcdef")


def test_cli_ask_json_and_missing_projector(shapes, tmp_path):
    from mmindex.cli import app

    root, _ = shapes
    runner = CliRunner()
    result = runner.invoke(app, ["ask", "a red circle", "-k", "2", "--threshold", "-1",
                                 "--max-new-tokens", "2", "--index", str(root / "idx"),
                                 "--llm", TEST_TINY, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["citations"]) == 2 and data["abstained"] is False
    assert all(c["answer"] is not None for c in data["citations"])  # each image asked alone
    joint = runner.invoke(app, ["ask", "a red circle", "-k", "2", "--threshold", "-1",
                                "--max-new-tokens", "2", "--index", str(root / "idx"),
                                "--llm", TEST_TINY, "--json", "--joint"])
    assert [c["answer"] for c in json.loads(joint.stdout)["citations"]] == [None, None]
    streamed = runner.invoke(app, ["ask", "a red circle", "-k", "2", "--threshold", "-1",
                                   "--max-new-tokens", "2", "--index", str(root / "idx"),
                                   "--llm", TEST_TINY])
    assert streamed.exit_code == 0, streamed.output
    assert data["text"] in streamed.stdout  # greedy: the same answer, streamed
    cited = streamed.stdout.rstrip("\n").split("\n")[-2:]
    assert [line.split()[0] for line in cited] == ["[1]", "[2]"]
    result = runner.invoke(app, ["ask", "a red circle", "--index", str(root / "idx"),
                                 "--projector", str(tmp_path / "none")])
    assert result.exit_code == 2 and "train-projector" in result.output


def test_missing_llm_says_how_to_get_one(monkeypatch, tmp_path):
    from mmindex.errors import ModelError
    from mmindex.models import llm

    monkeypatch.delenv(llm.LLM_ENV, raising=False)
    monkeypatch.setattr(llm, "default_llm_dir", lambda: tmp_path / "nothing")
    with pytest.raises(ModelError, match="install-smollm2"):
        llm.load_llm(None)


def test_vqa_scores_every_mode_and_the_prior(shapes, tmp_path):
    from mmindex.eval.vqa import VqaConfig, format_vqa, plot_vqa, run_vqa

    root, _ = shapes
    questions = root / "data" / "questions.parquet"
    report = run_vqa(VqaConfig(questions=questions, checkpoint=root / "idx" / "projector",
                               train_questions=questions, per_kind=3, batch_size=8))
    assert set(report.modes) == {"full", "text", "random"}
    kinds = {"color", "shape", "count", "position", "exists", "absent"}
    assert set(report.modes["full"].accuracy) == kinds
    assert report.prior["overall"] > 0  # the majority answer is right on its own data
    table = format_vqa(report)
    assert "prior" in table and "overall" in table and "95% CI" in table
    assert plot_vqa(report, tmp_path / "vqa.png").read_bytes()[:4] == b"\x89PNG"


def test_vqa_with_several_images_per_question(shapes, tmp_path):
    from mmindex.eval.vqa import VqaConfig, format_vqa, run_vqa

    root, _ = shapes
    questions = root / "data" / "questions.parquet"
    config = VqaConfig(questions=questions, checkpoint=root / "idx" / "projector", per_kind=3,
                       batch_size=8, images_per_question=2)
    report = run_vqa(config)
    assert set(report.modes) == {"joint", "each"}
    assert "count" not in report.per_kind and report.n_questions > 0  # counts name nothing
    assert "joint" in format_vqa(report)
    with pytest.raises(UserInputError, match="pairs"):
        run_vqa(replace(config, pairs=tmp_path / "none.parquet"))
    from mmindex.cli import app

    result = CliRunner().invoke(app, ["eval", "vqa", "--questions", str(questions),
                                      "--projector", str(root / "idx" / "projector"),
                                      "--images-per-question", "3", "--modes", "each",
                                      "--per-kind", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["modes"]) == ["each"]


def test_hallucination_rates_come_with_a_wilson_interval_and_their_count():
    from pathlib import Path

    from mmindex.eval.vqa import VqaRow, _score, wilson_interval

    rows = [VqaRow(Path("a.png"), "Is there a star?", "no", "exists")] * 20
    result = _score(rows, ["yes"] * 2 + ["no"] * 18, seconds=1.0, new_tokens=20)
    assert result.hallucination["exists_yes_when_absent"] == pytest.approx(0.1)
    assert result.hallucination_n == {"exists_yes_when_absent": 20, "absent_not_none": 0}
    low, high = result.hallucination_interval["exists_yes_when_absent"]
    assert 0.02 < low < 0.1 < high < 0.31  # Wilson for 2 of 20: 0.028-0.301
    # 0 of n is not a certainty: the upper bound is z^2 / (n + z^2), 0.161 for n = 20
    assert wilson_interval(0, 20) == pytest.approx((0.0, 1.96**2 / (20 + 1.96**2)), abs=1e-3)
    assert wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0] < 0.07


def test_relevant_queries_come_from_questions_or_captions(shapes):
    from mmindex.ask.generator import relevant_queries

    root, _ = shapes
    questions = relevant_queries(root / "data" / "questions.parquet", n=1000)
    assert len(questions) == 8 * 6  # seven per image, less the one presuming a missing object
    captions = relevant_queries(root / "data" / "pairs.parquet", n=3)
    assert len(captions) == 3 and all(" the " in c or ":" in c for c in captions)


def test_cli_calibrate_ask_stores_the_threshold(shapes):
    from mmindex.cli import app

    root, _ = shapes
    result = CliRunner().invoke(app, ["calibrate-ask", str(root / "data" / "questions.parquet"),
                                      "--n", "10", "--index", str(root / "idx")])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output and (root / "idx" / "ask.json").is_file()
    (root / "idx" / "ask.json").unlink()


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_interrupt_keeps_what_was_trained(shapes, tmp_path, monkeypatch):
    import mmindex.train.projector as tp

    root, _ = shapes
    calls = []

    def interrupting_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 1.0

    monkeypatch.setattr(tp, "train_step", interrupting_step)
    config = TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / "p", llm=TEST_TINY,
                                  captions=root / "data" / "pairs.parquet",
                                  questions=root / "data" / "questions.parquet",
                                  image_tokens=4, caption_steps=5, qa_steps=5, batch_size=2)
    report = train_projector(config)
    assert [(s.name, s.steps, s.interrupted) for s in report.stages] == [("captions", 1, True)]
    assert (tmp_path / "p" / "model.safetensors").is_file()


def test_training_can_continue_from_a_checkpoint(shapes, tmp_path):
    import torch
    from safetensors.torch import load_file

    root, _ = shapes
    start = root / "idx" / "projector"
    config = TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / "p", llm=TEST_TINY,
                                  questions=root / "data" / "questions.parquet", image_tokens=4,
                                  qa_steps=1, batch_size=2, lr=1e-12, init_from=start)
    report = train_projector(config)
    assert [(s.name, s.steps) for s in report.earlier_stages] == [("captions", 3), ("qa", 4)]
    config = replace(config, init_from=tmp_path / "p", out_dir=tmp_path / "p2")
    lineage = train_projector(config).earlier_stages  # the grandparent's stages come too
    assert [(s.name, s.steps) for s in lineage] == [("captions", 3), ("qa", 4), ("qa", 1)]
    saved = json.loads((tmp_path / "p2" / "config.json").read_text())["train"]
    assert [s["steps"] for s in saved["earlier_stages"]] == [3, 4, 1]
    before, after = load_file(str(start / "model.safetensors")), load_file(
        str(tmp_path / "p" / "model.safetensors"))
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=1e-4, atol=1e-6)


def test_a_projector_on_an_earlier_vision_layer_answers_from_that_layer(shapes, tmp_path,
                                                                       monkeypatch):
    root, _ = shapes
    config = TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / "p", llm=TEST_TINY,
                                  questions=root / "data" / "questions.parquet",
                                  image_tokens=None, vision_layer=-2, qa_steps=1, batch_size=2)
    train_projector(config)
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["vision_layer"] == -2 and saved["image_tokens"] == 16  # 4x4 patches, unpooled
    index = open_index(root / "idx")
    asked = []
    patch_tokens = index.encoder.patch_tokens
    monkeypatch.setattr(index.encoder, "patch_tokens",
                        lambda pixels, tokens, layer: asked.append(layer) or
                        patch_tokens(pixels, tokens, layer))
    vlm = load_vlm(tmp_path / "p", load_llm(TEST_TINY), index.encoder.info.fingerprint)
    answer = Generator(index, ProjectorAnswerer(vlm, index.encoder)).ask(
        "a red circle", AskConfig(k=2, threshold=-1.0, max_new_tokens=2))
    assert not answer.abstained and asked == [-2, -2]  # each of the 2 images, alone


def test_a_checkpoint_from_before_vision_layers_reads_as_the_last_layer(shapes, tmp_path):
    import shutil

    from mmindex.models.vlm import read_vlm_config

    root, _ = shapes
    old = tmp_path / "old"
    shutil.copytree(root / "idx" / "projector", old)
    raw = json.loads((old / "config.json").read_text())
    del raw["vision_layer"]
    (old / "config.json").write_text(json.dumps(raw))
    assert read_vlm_config(old).vision_layer == -1


def test_cli_vision_layer_and_lora_reach_the_checkpoint_and_a_missing_layer_is_refused(
        shapes, tmp_path):
    import torch
    from safetensors.torch import load_file

    from mmindex.cli import app

    root, _ = shapes
    args = ["train-projector", "--model", TINY, "--llm", TEST_TINY, "--questions",
            str(root / "data" / "questions.parquet"), "--qa-steps", "1", "--batch-size", "2",
            "--image-tokens", "4"]
    result = CliRunner().invoke(app, args + ["--vision-layer", "-2", "--lora-rank", "2",
                                             "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["vision_layer"] == -2 and saved["lora_rank"] == 2
    assert any(".lora_B." in k for k in load_file(str(tmp_path / "p" / "model.safetensors")))
    result = CliRunner().invoke(app, args + ["--token-positions", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "config.json").read_text())["token_positions"] is True
    weights = load_file(str(tmp_path / "t" / "model.safetensors"))
    assert weights["projector.position"].shape == (4, 64)
    index = open_index(root / "idx")  # the checkpoint loads back with its positions
    vlm = load_vlm(tmp_path / "t", load_llm(TEST_TINY), index.encoder.info.fingerprint)
    torch.testing.assert_close(vlm.projector.position.detach(), weights["projector.position"])
    result = CliRunner().invoke(app, args + ["--init-from", str(root / "idx" / "projector"),
                                             "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "trained before for 7 steps: captions 3, qa 4" in result.output
    result = CliRunner().invoke(app, args + ["--vision-layer", "-5", "--out", str(tmp_path / "q")])
    assert result.exit_code != 0 and "vision layer -5 does not exist" in result.output
    assert not (tmp_path / "q").exists()


def test_a_cuda_device_without_a_gpu_is_refused_before_loading(shapes, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    root, _ = shapes
    config = TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / "p", llm=TEST_TINY,
                                  questions=root / "data" / "questions.parquet", qa_steps=1,
                                  device="cuda")
    with pytest.raises(UserInputError, match="no CUDA device"):
        train_projector(config)
    assert not (tmp_path / "p").exists()


def test_ask_and_caption_refuse_cuda_without_a_gpu_before_loading(shapes, monkeypatch):
    import torch

    import mmindex.models.llm
    from mmindex.cli import app

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    monkeypatch.setattr(mmindex.models.llm, "load_llm", lambda *a: pytest.fail("it loaded"))
    root, _ = shapes
    image = next((root / "data" / "images").glob("*.png"))
    for args in (["ask", "a red circle"], ["caption", str(image)]):
        result = CliRunner().invoke(app, args + ["--index", str(root / "idx"), "--llm",
                                                 TEST_TINY, "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.output, result.output


def test_ask_on_cuda_gives_the_cpu_answer(shapes):
    import torch

    from mmindex.ask.generator import open_generator

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    root, _ = shapes
    answers = {}
    for device in ("cpu", "cuda"):
        generator = open_generator(root / "idx", llm=TEST_TINY, device=device)
        assert generator.vlm.device.type == device
        answers[device] = generator.ask("a red circle", AskConfig(k=2, threshold=-1.0,
                                                                  max_new_tokens=4))
    assert answers["cuda"].citations == answers["cpu"].citations
    assert answers["cuda"].text == answers["cpu"].text  # greedy, fp32


def test_training_and_vqa_on_cuda_match_the_cpu(shapes, tmp_path):
    import torch

    from mmindex.eval.vqa import VqaConfig, run_vqa

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    root, _ = shapes
    losses = {}
    for device in ("cpu", "cuda"):
        config = TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / device, llm=TEST_TINY,
                                      questions=root / "data" / "questions.parquet",
                                      image_tokens=4, qa_steps=2, batch_size=4, device=device,
                                      precision="fp32")
        losses[device] = train_projector(config).stages[0].loss_curve[0]
        report = run_vqa(VqaConfig(questions=root / "data" / "questions.parquet",
                                   checkpoint=tmp_path / device, per_kind=2, device=device,
                                   precision="fp32"))
        assert report.modes["full"].overall >= 0
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3)


def test_loading_an_llm_without_the_ask_extra_says_what_to_install(monkeypatch):
    from mmindex.errors import ModelError
    from mmindex.models import llm
    monkeypatch.setattr(llm, "ask_extra_installed", lambda: False)
    with pytest.raises(ModelError, match=r"pip install 'mmindex\[ask\]'"):
        llm.load_llm(TEST_TINY)


def test_loss_curves_of_a_lineage_follow_one_another():
    from mmindex.train.projector import CURVE_STEPS, StageReport, curve_steps
    first = StageReport("captions", steps=CURVE_STEPS + 5, loss_curve=[3.0, 2.0])
    second = StageReport("qa", steps=CURVE_STEPS, loss_curve=[1.0])
    assert curve_steps([first, second]) == [[CURVE_STEPS, CURVE_STEPS + 5],
                                            [2 * CURVE_STEPS + 5]]


@pytest.mark.parametrize("fusion", ["cross-attention", "early"])
def test_each_fusion_trains_answers_and_is_measured(shapes, fusion, tmp_path):
    """train-projector --fusion X writes a checkpoint that `ask` answers through (CLI) and
    `eval vqa` scores, like the prefix projector."""
    from mmindex.cli import app
    from mmindex.eval.vqa import VqaConfig, run_vqa

    root, _ = shapes
    out = tmp_path / fusion
    result = CliRunner().invoke(app, [
        "train-projector", "--model", TINY, "--out", str(out), "--llm", TEST_TINY,
        "--captions", str(root / "data" / "pairs.parquet"), "--fusion", fusion,
        "--caption-steps", "2", "--qa-steps", "2", "--batch-size", "4", "--image-size", "32",
        "--latents", "2", "--questions", str(root / "data" / "questions.parquet")])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    from mmindex.models.vlm import read_vlm_config

    assert read_vlm_config(out).fusion == fusion
    trained = load_file(str(out / "model.safetensors"))
    if fusion == "cross-attention":  # the blocks learned: their gates left 0
        gates = [v for k, v in trained.items() if k.endswith("_gate")]
        assert gates and all(float(g) != 0.0 for g in gates)
    answer = CliRunner().invoke(app, ["ask", "what colour is the circle?", "--index",
                                      str(root / "idx"), "--projector", str(out), "--llm",
                                      TEST_TINY, "--threshold", "-1", "-k", "2", "--json"])
    assert answer.exit_code == 0, answer.output
    assert len(json.loads(answer.stdout)["citations"]) == 2
    report = run_vqa(VqaConfig(questions=root / "data" / "questions.parquet", checkpoint=out,
                               llm=TEST_TINY, per_kind=2, batch_size=8, modes=("full", "text")))
    assert set(report.modes) == {"full", "text"} and report.n_questions > 0
    table = CliRunner().invoke(app, [  # the fusions side by side, a column each
        "eval", "vqa", "--questions", str(root / "data" / "questions.parquet"), "--projector",
        str(root / "idx" / "projector"), "--projector", str(out), "--llm", TEST_TINY,
        "--per-kind", "2"])
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[0].split()
    assert header[2:] == ["prefix", fusion] and "overall" in table.stdout
