import json

import pytest

from typer.testing import CliRunner

from mmindex.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_ingest_search_info_round_trip(photo_folder, tmp_path):
    index = tmp_path / "idx"
    result = invoke("ingest", photo_folder, "--index", index, "--model", "test-tiny", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {"added", "updated", "removed", "unchanged", "failed", "seconds"} <= set(summary)
    assert summary["added"] == 6
    result = invoke("search", "a photo", "--index", index, "-k", "2", "--json")
    hits = json.loads(result.output)
    assert len(hits) == 2 and {"id", "path", "score"} <= set(hits[0])
    result = invoke("search", "--image", photo_folder / "2023" / "photo0.jpg", "--index", index)
    assert result.exit_code == 0 and "photo0.jpg" in result.output
    info = json.loads(invoke("info", "--index", index, "--json").output)
    assert info["tables"]["images"]["rows"] == 6 and info["model"] == "test-tiny"


def test_index_from_environment(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MMINDEX_INDEX", str(tmp_path / "env-idx"))
    assert invoke("ingest", photo_folder, "--model", "test-tiny").exit_code == 0
    assert (tmp_path / "env-idx" / "manifest.json").exists()


def test_errors_are_one_line_with_an_exit_code(tmp_path):
    result = invoke("search", "x", "--index", tmp_path / "none")
    assert result.exit_code == 4 and "mmindex ingest" in result.output
    assert "Traceback" not in result.output
    result = invoke("ingest", tmp_path / "missing", "--index", tmp_path / "i", "--model", "test-tiny")
    assert result.exit_code == 2 and "no such file" in result.output
    result = invoke("ingest", tmp_path, "--index", tmp_path / "i", "--device", "gpu0")
    assert result.exit_code == 2 and "--device must be cpu or cuda, not 'gpu0'" in result.output


def test_models_lists_named_models():
    result = invoke("models")
    assert result.exit_code == 0 and "starter" in result.output


def test_help_imports_no_heavy_library():
    """`mmindex --help` and a subcommand's help must start fast: no torch, Ray or models."""
    import subprocess
    import sys

    probe = ("import sys\nfrom mmindex.cli import app\n"
             "for argv in (['--help'], ['search', '--help'], ['ingest', '--help']):\n"
             "    try:\n        app(argv)\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('torch', 'ray', 'open_clip', 'transformers')"
             " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert "Usage" in result.stdout and result.stdout.strip().splitlines()[-1] == "[]"


def test_every_config_default_is_the_options_default():
    """The CLI states no default of its own where a config dataclass has one: each option
    built by config_option shows the config's value, and changing the config changes it."""
    import dataclasses

    import typer.main

    from mmindex.ask.config import AskConfig
    from mmindex.eval.config import VqaConfig
    from mmindex.ingestion.config import IngestConfig
    from mmindex.train.config import FinetuneConfig, TrainProjectorConfig

    commands = {"ingest": IngestConfig, "finetune": FinetuneConfig, "ask": AskConfig,
                "train-projector": TrainProjectorConfig}
    group = typer.main.get_group(app)
    checked = 0
    for name, config in [*commands.items(), ("vqa", VqaConfig)]:
        command = group.commands["eval"].commands["vqa"] if name == "vqa" else \
            group.commands[name]
        defaults = {f.name: f.default for f in dataclasses.fields(config)
                    if f.default is not dataclasses.MISSING}
        for param in command.params:
            if param.name in defaults and param.name not in ("device",):
                assert param.default == defaults[param.name], (name, param.name)
                checked += 1
    assert checked >= 50


def test_config_validation_is_a_user_error(tmp_path):
    from mmindex import IngestConfig
    from mmindex.errors import UserInputError

    with pytest.raises(UserInputError, match="--executor"):
        IngestConfig(roots=(tmp_path,), index_dir=tmp_path, executor="slurm")


def test_text_and_image_together_is_one_line_about_the_cli(photo_folder, tmp_path):
    index = tmp_path / "idx"
    assert invoke("ingest", photo_folder, "--index", index, "--model", "test-tiny").exit_code == 0
    image = next(photo_folder.rglob("*.jpg"))
    result = invoke("search", "a cat", "--image", image, "--index", index)
    assert result.exit_code == 2 and "--image" in result.output
    assert "vector" not in result.output and "Traceback" not in result.output
    assert "Leave out results" in invoke("search", "--help").output  # --min-score explained


def test_models_leads_with_what_works_here(monkeypatch):
    from mmindex.models import registry

    monkeypatch.setattr(registry, "clip_weights_cached",
                        lambda spec: spec == "ViT-B-16:openai")  # as if fetched once before
    lines = invoke("models").output.splitlines()
    here = lines[:lines.index("")]
    assert here[0] == "Works here now:" and any("ViT-B-16:openai" in line for line in here)
    assert any(line.split()[0] == "starter" for line in here[1:])
    assert not any("hf-hub:" in line for line in here)  # that needs the hub
    assert len(lines) < 15 and "--all" in lines[len(here) + 1]
    assert len(invoke("models", "--all").output.splitlines()) > 100


def test_eval_vqa_tile_budgets_are_whole_numbers_or_refused_by_value(tmp_path):
    result = invoke("eval", "vqa", "--questions", tmp_path / "q.parquet", "--projector",
                    tmp_path / "p", "--tiles", "0,two")
    assert result.exit_code == 2 and "not '0,two'" in result.output
