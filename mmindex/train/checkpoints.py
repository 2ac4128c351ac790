"""Checkpoints and resume state: every finished epoch leaves the output directory a loadable
checkpoint and a resume state, so Ctrl-C loses at most the epoch in progress."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from mmindex.core.atomic import staged_directory, write_atomically
from mmindex.data.augment import augment_policy
from mmindex.data.pairs import SkippedRow
from mmindex.errors import UserInputError
from mmindex.train.config import SIGLIP_INIT_BIAS, EpochMetrics, FinetuneConfig

RESUME_DIR = "resume"


def _encoder_with(template, state_dict):
    """A fresh encoder of the template's architecture holding `state_dict`."""
    from mmindex.models.clip import build_from_config

    cfg = dict(template.model_cfg)
    if "logit_bias" in state_dict and "init_logit_bias" not in cfg:
        cfg["init_logit_bias"] = SIGLIP_INIT_BIAS
    return build_from_config(cfg, template.info.spec, template.arch, state_dict)


def interpolate_weights(start: dict, finetuned: dict, alpha: float) -> dict:
    """WiSE-FT: (1 - alpha) * start + alpha * finetuned, tensor by tensor.

    Integer tensors (BatchNorm's batch counters) and weights the start lacks (a bias SigLIP
    added) come from the fine-tuned model.
    """
    mixed = {}
    for name, tuned in finetuned.items():
        base = start.get(name)
        if base is None or not tuned.is_floating_point():
            mixed[name] = tuned.clone()
        else:
            mixed[name] = torch.lerp(base.float(), tuned.float(), alpha).to(tuned.dtype)
    return mixed


def _prepare_out_dir(config: FinetuneConfig) -> None:
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out} exists and is not a folder")
    if config.resume:
        if not (out / RESUME_DIR / "latest.json").is_file():
            raise UserInputError(f"{out} holds no finished epoch to resume from")
        return
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out} is not empty; choose a new folder, or --resume a run")
    out.mkdir(parents=True, exist_ok=True)


def save_epoch(trainer) -> None:
    """Make the output directory a loadable checkpoint of this epoch, then record the
    resume state. Each file is replaced atomically, so an interrupt leaves the last
    finished epoch readable."""
    out = Path(trainer.config.out_dir)
    last = trainer.history[-1]
    record = {"epoch": last.epoch, "finished": False} | training_record(
        trainer.config, [p.style for p in trainer.plan.train]
    )
    _write_checkpoint_files(trainer.encoder, out, {"finetune": record})
    state_dir = out / RESUME_DIR / f"epoch-{last.epoch:04d}"
    _write_resume_state(trainer, state_dir)
    write_atomically(
        out / RESUME_DIR / "latest.json", json.dumps({"epoch": last.epoch, "dir": state_dir.name})
    )
    for old in (out / RESUME_DIR).glob("epoch-*"):
        if old != state_dir:
            shutil.rmtree(old, ignore_errors=True)


def training_record(config: FinetuneConfig, train_styles) -> dict:
    """What every checkpoint of a run says about its training data and augmentation."""
    styles = pair_styles(train_styles)
    return {
        "augment": augment_record(config.augment),
        "styles": styles,  # this run's training pairs' styles (None: not recorded)
        # every style the weights were trained on, the base checkpoint's included
        "trained_styles": merge_styles(recorded_styles(config.model), styles),
    }


def augment_record(level: str) -> dict:
    """What the checkpoint says about augmentation: the level and its exact parameters."""
    policy = augment_policy(level)
    return {"level": level} | ({} if policy is None else policy.to_dict())


def pair_styles(styles) -> list[str] | None:
    """The distinct styles, sorted; None when any pair's style is unknown (not all drawn by
    make-shapes --style), since a transfer table must not call a style unseen wrongly."""
    if not styles or any(style is None for style in styles):
        return None
    return sorted(set(styles))


def merge_styles(base: list[str] | None, run: list[str] | None) -> list[str] | None:
    if base is None or run is None:
        return None
    return sorted(set(base) | set(run))


def recorded_styles(model: str | None) -> list[str] | None:
    """The trained styles an mmindex checkpoint records; [] for random weights (nothing
    trained yet), None for any other model (unknown)."""
    if model is None:
        return []
    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        record = json.loads(config.read_text()).get("finetune", {})
    except (json.JSONDecodeError, AttributeError):
        return None
    return record.get("trained_styles") if isinstance(record, dict) else None


def _write_checkpoint_files(encoder, out: Path, extra: dict) -> None:
    from mmindex.models.clip import save_checkpoint

    save_checkpoint(encoder, out, extra)  # each file replaced durably, the weights first


def _write_resume_state(trainer, state_dir: Path) -> None:
    from safetensors.torch import save_file

    model_state = {
        k: v.detach().contiguous() for k, v in trainer.encoder.model.state_dict().items()
    }
    tensors, groups = flatten_optimizer_state(trainer.optimizer.state_dict())
    state = {
        "undecodable": [asdict(row) for row in trainer.pixels.failed],
        "step": trainer.step,
        "history": [asdict(e) for e in trainer.history],
        "param_groups": groups,
    }
    with staged_directory(state_dir) as staging:  # latest.json names it only once it is whole
        save_file(model_state, str(staging / "model.safetensors"))
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "state.json").write_text(json.dumps(state))


def load_resume_state(trainer) -> None:
    from safetensors.torch import load_file

    state_dir = _latest_state_dir(Path(trainer.config.out_dir))
    state = json.loads((state_dir / "state.json").read_text())
    trainer.encoder.model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    optimizer_state = unflatten_optimizer_state(
        load_file(str(state_dir / "optimizer.safetensors")), state["param_groups"]
    )
    trainer.optimizer.load_state_dict(optimizer_state)
    trainer.step = state["step"]
    trainer.history = [EpochMetrics(**e) for e in state["history"]]


def read_training_record(out_dir: Path) -> tuple[list[EpochMetrics], tuple[SkippedRow, ...]]:
    """The epoch history and the undecodable training images, as rank 0 recorded them with
    its last resume state (the same for a local run and for Ray workers)."""
    state = json.loads((_latest_state_dir(Path(out_dir)) / "state.json").read_text())
    history = [EpochMetrics(**entry) for entry in state["history"]]
    return history, tuple(SkippedRow(**row) for row in state.get("undecodable", []))


def _latest_state_dir(out_dir: Path) -> Path:
    resume = out_dir / RESUME_DIR
    return resume / json.loads((resume / "latest.json").read_text())["dir"]


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer state as flat tensors (for safetensors) plus JSON param groups: no pickle."""
    tensors = {
        f"{index}.{key}": torch.as_tensor(value).contiguous()
        for index, slots in state_dict["state"].items()
        for key, value in slots.items()
    }
    return tensors, state_dict["param_groups"]


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


def load_checkpoint_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from mmindex.models.clip import CHECKPOINT_WEIGHTS

    return load_file(str(Path(out_dir) / CHECKPOINT_WEIGHTS))
