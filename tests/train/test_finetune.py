"""Fine-tuning: locking, WiSE-FT, the schedule, a tiny end-to-end run, resume, bad inputs,
and the distributed loss on two Ray workers."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmindex.data.shapes import write_shapes
from mmindex.errors import UserInputError
from mmindex.models.clip import load_checkpoint
from mmindex.models.registry import load_encoder
from mmindex.train.checkpoints import interpolate_weights
from mmindex.train.config import FinetuneConfig
from mmindex.train.data import epoch_batches, local_slice, split_by_image
from mmindex.train.finetune import finetune
from mmindex.train.locking import apply_locks, parameter_groups, tower_blocks
from mmindex.train.loop import batch_loss, build_start_encoder, lr_at


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """60 small shapes images with captions and attributes."""
    out = tmp_path_factory.mktemp("shapes")
    write_shapes(out, 60, seed=5, size=32, background="plain")
    return out / "pairs.parquet"


def tiny_config(pairs: Path, out: Path, **overrides) -> FinetuneConfig:
    base = {
        "pairs": pairs,
        "out_dir": out,
        "model": "test-tiny",
        "epochs": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "val_fraction": 0.2,
        "precision": "fp32",
    }
    return FinetuneConfig(**(base | overrides))


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- locking


def test_lock_image_freezes_only_the_image_tower(shapes, tmp_path):
    encoder = load_encoder("test-tiny")
    apply_locks(encoder.model, tiny_config(shapes, tmp_path, lock_image=True))
    names = trainable(encoder.model)
    assert not any(n.startswith("visual.") for n in names)
    assert "token_embedding.weight" in names and "logit_scale" in names


def test_unlock_last_keeps_the_last_block_and_head_trainable(shapes, tmp_path):
    encoder = load_encoder("test-tiny")  # a ViT with two residual blocks
    config = tiny_config(shapes, tmp_path, lock_image=True, lock_text=True, unlock_last=1)
    apply_locks(encoder.model, config)
    names = trainable(encoder.model)
    assert {"visual.proj", "visual.ln_post.weight", "text_projection", "ln_final.weight"} <= names
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in names)
    assert not any(n.startswith("visual.transformer.resblocks.0.") for n in names)
    assert not any(n.startswith("transformer.resblocks.0.") for n in names)
    assert "visual.conv1.weight" not in names and "token_embedding.weight" not in names


def test_resnet_tower_blocks_are_its_stages():
    config = FinetuneConfig(pairs=Path("p"), out_dir=Path("o"), from_scratch="mmindex-shapes-rn")
    model = build_start_encoder(config).model
    blocks = tower_blocks(model, "image")
    assert len(blocks) == 5  # stem, layer1..layer4 (+ attention pool)
    assert all(n.startswith(("visual.layer4.", "visual.attnpool.")) for n in blocks[-1])
    assert any(n.startswith("visual.attnpool.") for n in blocks[-1])


def test_no_weight_decay_on_gains_biases_and_logit_scale():
    model = load_encoder("test-tiny").model
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any(p is model.logit_scale for p in no_decay["params"])


# ---------------------------------------------------------------- small pure pieces


def test_wise_ft_endpoints_and_midpoint():
    start = {"w": torch.zeros(3), "n": torch.tensor(1)}
    tuned = {"w": torch.full((3,), 2.0), "n": torch.tensor(7), "bias": torch.ones(1)}
    assert torch.equal(interpolate_weights(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(interpolate_weights(start, tuned, 1.0)["w"], tuned["w"])
    mid = interpolate_weights(start, tuned, 0.5)
    assert torch.allclose(mid["w"], torch.ones(3))
    assert mid["n"].item() == 7 and torch.equal(mid["bias"], tuned["bias"])


def test_schedule_warms_up_then_decays_to_zero():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_batches_depend_on_seed_and_epoch_only():
    first = [b.tolist() for b in epoch_batches(50, 16, seed=3, epoch=2)]
    assert first == [b.tolist() for b in epoch_batches(50, 16, seed=3, epoch=2)]
    assert len(first) == 3 and all(len(b) == 16 for b in first)
    assert first != [b.tolist() for b in epoch_batches(50, 16, seed=3, epoch=3)]


def test_validation_split_holds_out_whole_images(shapes):
    from mmindex.data.pairs import load_pairs

    rows = load_pairs(shapes).rows
    train, val = split_by_image(rows, 0.25, seed=0)
    assert len(val) == 15 and len(train) == 45
    assert not {r.image for r in train} & {r.image for r in val}


def test_config_refuses_contradictions(shapes, tmp_path):
    with pytest.raises(UserInputError):
        FinetuneConfig(pairs=shapes, out_dir=tmp_path, from_scratch="mmindex-tiny", wise_ft=0.5)
    with pytest.raises(UserInputError):
        tiny_config(shapes, tmp_path, unlock_last=2)  # no tower locked
    with pytest.raises(UserInputError):
        tiny_config(shapes, tmp_path, model=None)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_finetune_writes_a_loadable_checkpoint_with_reports(shapes, tmp_path):
    out = tmp_path / "run"
    result = finetune(tiny_config(shapes, out, wise_ft=0.5))
    assert len(result.history) == 2 and result.history[-1].val is not None
    assert result.before is not None and result.after is not None
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["matched_text_to_image_r1"] >= 0.0
    assert {"before", "finetuned", "after", "history"} <= set(metrics)
    assert (out / "curves.png").stat().st_size > 0 and "WiSE-FT" in (out / "report.txt").read_text()
    assert not (out / "resume").exists()
    encoder = load_encoder(str(out))  # weights-only loading through the registry
    start = load_encoder("test-tiny")
    assert encoder.info.fingerprint != start.info.fingerprint
    texts = encoder.encode_texts(["a small red circle in the center"])
    assert texts.shape == (1, 64) and np.isfinite(texts).all()


@pytest.mark.slow
def test_from_scratch_with_siglip_saves_the_learned_bias(shapes, tmp_path):
    config = FinetuneConfig(
        pairs=shapes,
        out_dir=tmp_path / "s",
        from_scratch="mmindex-tiny",
        epochs=1,
        batch_size=16,
        loss="siglip",
        precision="bf16",
    )
    finetune(config)
    model = load_checkpoint(tmp_path / "s").model
    assert model.logit_bias is not None and model.logit_bias.item() != -10.0


class _Interrupt:
    """A progress callback that presses Ctrl-C at the first step of an epoch."""

    def __init__(self, epoch: int):
        self.stage = f"epoch {epoch}/"

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage.startswith(self.stage):
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupt_leaves_last_epoch_loadable_and_resume_matches(shapes, tmp_path):
    config = tiny_config(shapes, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        finetune(config, progress=_Interrupt(epoch=2))
    saved = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert saved["finetune"]["epoch"] == 1 and not saved["finetune"]["finished"]
    load_encoder(str(tmp_path / "cut"))  # the finished epoch is a usable model
    resumed = finetune(replace(config, resume=True))
    assert [e.epoch for e in resumed.history] == [1, 2]
    whole = finetune(replace(config, out_dir=tmp_path / "whole"))
    a = load_checkpoint(tmp_path / "cut").model.state_dict()
    b = load_checkpoint(tmp_path / "whole").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.history[-1].train_loss == pytest.approx(whole.history[-1].train_loss)


def test_bad_rows_are_reported_and_no_usable_row_is_an_error(shapes, tmp_path):
    from mmindex.train.finetune import _make_plan

    rows = [
        json.dumps(
            {"image": str(shapes.parent / f"images/s5_{i:06d}.png"), "caption": f"caption {i}"}
        )
        for i in range(40)
    ]
    rows.append(json.dumps({"image": "missing.png", "caption": "gone"}))
    rows.append(json.dumps({"image": str(shapes.parent / "images/s5_000000.png"), "caption": "  "}))
    table = tmp_path / "pairs.jsonl"
    table.write_text("\n".join(rows))
    plan, skipped = _make_plan(tiny_config(table, tmp_path / "o"))
    assert len(skipped) == 2 and len(plan.train) + len(plan.val) == 40
    assert {"empty caption"} <= {s.reason for s in skipped}
    empty = tmp_path / "empty.jsonl"
    empty.write_text(rows[-2] + "\n" + rows[-1])
    with pytest.raises(UserInputError, match="no usable"):
        finetune(tiny_config(empty, tmp_path / "o2"))


def test_out_dir_must_be_new_unless_resuming(shapes, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserInputError, match="not empty"):
        finetune(tiny_config(shapes, tmp_path / "full"))
    with pytest.raises(UserInputError, match="resume"):
        finetune(tiny_config(shapes, tmp_path / "new", resume=True))


# ---------------------------------------------------------------- distributed


def _loss_and_grads(model, images, texts, rank=0, world=1):
    loss = batch_loss(model, images, texts, "clip", "fp32", rank, world)
    model.zero_grad()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _distributed_worker(loop_config: dict) -> None:
    """Each Ray worker: its half of the batch, gathered loss, summed gradients, to a file."""
    import ray.train

    from mmindex.train.loop import combine_gradients

    torch.set_num_threads(1)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = load_encoder("test-tiny").model.train()
    images, texts = loop_config["images"], loop_config["texts"]
    share = local_slice(np.arange(len(images)), rank, world)
    loss = batch_loss(model, images[share], texts[share], "clip", "fp32", rank, world)
    loss.backward()
    combine_gradients(model, world)
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.save({"loss": loss.item(), "grads": grads}, Path(loop_config["out"]) / f"{rank}.pt")


@pytest.mark.slow
def test_two_ray_workers_give_the_single_process_loss_and_gradient(tmp_path):
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=generator)  # (B, 3, H, W)
    texts = torch.randint(1, 400, (8, 32), generator=generator)  # (B, L)
    model = load_encoder("test-tiny").model.train()
    single_loss, single_grads = _loss_and_grads(model, images, texts)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Workers cannot import this test module by name: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        TorchTrainer(
            _distributed_worker,
            train_loop_config={"images": images, "texts": texts, "out": str(tmp_path)},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="loss"),
        ).fit()
    finally:
        ray.shutdown()
    for rank in (0, 1):
        worker = torch.load(tmp_path / f"{rank}.pt")  # our own file, written just above
        assert worker["loss"] == pytest.approx(single_loss, rel=1e-5)
        for name, grad in single_grads.items():
            assert torch.allclose(worker["grads"][name], grad, atol=1e-5), name


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_finetune_then_index_records_the_checkpoint(shapes, tmp_path):
    from typer.testing import CliRunner

    from mmindex.cli import app

    runner = CliRunner()
    out, index = tmp_path / "ft", tmp_path / "idx"
    result = runner.invoke(
        app,
        [
            "finetune",
            "--pairs",
            str(shapes),
            "--model",
            "test-tiny",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--precision",
            "fp32",
            "--lock-text",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["after"]["matched_text_to_image_r1"] >= 0.0
    images = shapes.parent / "images"
    result = runner.invoke(
        app,
        [
            "ingest",
            str(images),
            "--index",
            str(index),
            "--model",
            str(out),
            "--executor",
            "local",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", "--index", str(index), "--json"]).output)
    assert info["model"] == str(out.resolve())
    result = runner.invoke(
        app, ["ingest", str(images), "--index", str(index), "--model", "test-tiny"]
    )
    assert result.exit_code == 3 and "built with model" in result.output
    result = runner.invoke(app, ["finetune", "--pairs", str(shapes), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--from-scratch" in result.output


@pytest.mark.parametrize("workers,nodes,cpus", [
    (2, [2.0], 1),  # one machine: an even share
    (2, [4.0], 2),
    (2, [2.0, 2.0], 2),  # one worker a node
    (2, [3.0, 3.0, 3.0], 3),  # an even share (4) fits no node: 3 each does
    (3, [4.0, 4.0], 2),
    (4, [8.0, 1.0], 2),
])
def test_ray_workers_hold_the_most_cpus_that_fit_the_nodes(workers, nodes, cpus):
    from mmindex.train.ray_backend import cpus_per_worker

    assert cpus_per_worker(workers, nodes) == cpus


def test_more_ray_workers_than_whole_cpus_are_refused():
    from mmindex.train.ray_backend import cpus_per_worker

    with pytest.raises(UserInputError, match="--workers 3 needs a whole CPU for each worker"):
        cpus_per_worker(3, [1.0, 1.5])
