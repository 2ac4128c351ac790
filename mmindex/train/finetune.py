"""Contrastive fine-tuning (or training from scratch) of a CLIP-style encoder on pairs.

    finetune(config) = load pairs -> recall before -> train_loop (here, or on Ray workers)
                       -> WiSE-FT -> recall after -> checkpoint, metrics.json, curves.png

`train_loop` is the one training loop: the local run calls it in-process and the Ray run
(`finetune_ray`) calls it inside each worker, which builds its own model from the plan.
Every finished epoch leaves the output directory a loadable checkpoint and a resume state,
so Ctrl-C loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmindex.data.pairs import Pair, Pairs, SkippedRow, load_pairs
from mmindex.errors import ModelError, UserInputError
from mmindex.eval.retrieval import RetrievalReport, evaluate_retrieval
from mmindex.models.registry import check_device

Progress = Callable[[str, int, int], None]
PRECISIONS = ("auto", "bf16", "fp32")
RESUME_DIR = "resume"
PIXEL_CACHE_BYTES = 2 * 1024**3  # decoded training images kept in memory up to this size
SIGLIP_INIT_BIAS = -10.0  # SigLIP's initial bias: most pairs are negatives at the start


@dataclass(frozen=True)
class FinetuneConfig:
    pairs: Path
    out_dir: Path
    model: str | None = None  # spec of the starting encoder (see `mmindex models`)
    from_scratch: str | None = None  # or a registered architecture, trained from random weights
    epochs: int = 5
    batch_size: int = 64  # global batch: split evenly across workers
    lr: float | None = None  # None: 1e-3 from scratch, 1e-5 when fine-tuning
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    grad_clip: float = 1.0
    val_pairs: Path | None = None
    val_fraction: float = 0.1  # of the training images, held out when val_pairs is None
    lock_image: bool = False
    lock_text: bool = False
    unlock_last: int = 0  # blocks (nearest the output) left trainable in a locked tower
    wise_ft: float | None = None  # final weights = (1 - a) * start + a * fine-tuned
    loss: str = "clip"  # clip | siglip
    device: str = "cpu"
    workers: int = 1  # > 1: Ray Train, one process per worker
    ray_address: str | None = None  # an existing cluster for the workers; None: a local Ray
    precision: str = "auto"  # auto: bf16 autocast where the hardware computes bf16 natively
    max_logit_scale: float = 100.0
    seed: int = 0
    resume: bool = False
    threads: int | None = None  # torch threads per process; None: torch's default

    def __post_init__(self):
        _check_config(self)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.from_scratch else 1e-5


def _check_config(c: FinetuneConfig) -> None:
    if (c.model is None) == (c.from_scratch is None):
        raise UserInputError("give exactly one of --model (fine-tune) or --from-scratch ARCH")
    if c.epochs < 1 or c.batch_size < 2:
        raise UserInputError("--epochs must be at least 1 and --batch-size at least 2")
    if c.loss not in ("clip", "siglip"):
        raise UserInputError(f"--loss must be clip or siglip, not {c.loss!r}")
    if c.precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {PRECISIONS}, not {c.precision!r}")
    if not 0.0 <= c.val_fraction < 1.0:
        raise UserInputError(f"--val-fraction must be in [0, 1), got {c.val_fraction}")
    if c.wise_ft is not None and not 0.0 <= c.wise_ft <= 1.0:
        raise UserInputError(f"--wise-ft must be in [0, 1], got {c.wise_ft}")
    if c.wise_ft is not None and c.from_scratch:
        raise UserInputError(
            "--wise-ft interpolates towards the starting model; "
            "random starting weights make it meaningless with --from-scratch"
        )
    if c.unlock_last < 0 or (c.unlock_last and not (c.lock_image or c.lock_text)):
        raise UserInputError("--unlock-last N needs --lock-image or --lock-text (and N >= 0)")
    if c.workers < 1 or c.batch_size % c.workers:
        raise UserInputError(
            f"--batch-size {c.batch_size} must split evenly over --workers {c.workers}"
        )
    if c.device not in ("cpu", "cuda"):
        raise UserInputError(f"--device must be cpu or cuda, not {c.device!r}")


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    step: int  # optimizer steps so far
    train_loss: float  # mean over the epoch's steps
    lr: float  # at the epoch's last step
    logit_scale: float
    seconds: float
    val: dict[str, float] | None  # recall@1 figures, see `recall_summary`


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: Path
    n_train: int
    n_val: int
    skipped: tuple[SkippedRow, ...]
    before: RetrievalReport | None  # None without validation pairs or from scratch
    finetuned: RetrievalReport | None  # the trained weights, before any WiSE-FT
    after: RetrievalReport | None  # the weights written to out_dir
    history: tuple[EpochMetrics, ...]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_skipped": len(self.skipped),
            "skipped": [asdict(s) for s in self.skipped],
            "before": recall_summary(self.before),
            "finetuned": recall_summary(self.finetuned),
            "after": recall_summary(self.after),
            "history": [asdict(e) for e in self.history],
            "seconds": round(self.seconds, 1),
        }


def recall_summary(report: RetrievalReport | None) -> dict[str, float] | None:
    """The recall@1 figures the curves and the report show."""
    if report is None:
        return None
    strict, matched = report.metrics.strict, report.metrics.matched
    summary = {
        "text_to_image_r1": strict.text_to_image.recall_at_1,
        "image_to_text_r1": strict.image_to_text.recall_at_1,
        "text_to_image_r5": strict.text_to_image.recall_at_5,
    }
    if matched is not None:
        summary["matched_text_to_image_r1"] = matched.text_to_image.recall_at_1
        summary["matched_image_to_text_r1"] = matched.image_to_text.recall_at_1
    return summary


# ---------------------------------------------------------------- the plan workers receive


@dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs, small and picklable: it builds the model itself."""

    config: FinetuneConfig
    train: tuple[Pair, ...]
    val: Pairs | None


def finetune(
    config: FinetuneConfig,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> FinetuneResult:
    """Train, evaluate before and after, and write the checkpoint directory."""
    started = time.perf_counter()
    plan, skipped = _make_plan(config)
    _prepare_out_dir(config)
    start = build_start_encoder(config)
    before = _evaluate(start, plan.val, config)
    _run(plan, progress, on_epoch)
    history, undecodable = read_training_record(config.out_dir)
    skipped += undecodable
    trained = load_checkpoint_weights(config.out_dir)
    finetuned = _evaluate(_encoder_with(start, trained), plan.val, config)
    final, after = trained, finetuned
    if config.wise_ft is not None and config.wise_ft != 1.0:
        final = interpolate_weights(start.model.state_dict(), trained, config.wise_ft)
        after = _evaluate(_encoder_with(start, final), plan.val, config)
    result = FinetuneResult(
        config.out_dir,
        len(plan.train),
        _n_images(plan.val),
        skipped,
        before,
        finetuned,
        after,
        tuple(history),
        time.perf_counter() - started,
    )
    _write_outputs(_encoder_with(start, final), result, config)
    return result


def _run(plan: TrainPlan, progress, on_epoch) -> list[EpochMetrics]:
    if plan.config.workers == 1:
        return train_loop(plan, progress=progress, on_epoch=on_epoch)
    from mmindex.train.ray_backend import train_distributed

    return train_distributed(plan, on_epoch)


def _n_images(pairs: Pairs | None) -> int:
    return 0 if pairs is None else len({p.image for p in pairs})


# ---------------------------------------------------------------- data


def _make_plan(config: FinetuneConfig) -> tuple[TrainPlan, tuple[SkippedRow, ...]]:
    """Load the pairs (bad rows are listed, none usable is an error) and split validation."""
    pairs = load_pairs(config.pairs)
    skipped = pairs.skipped
    if config.val_pairs is not None:
        val = load_pairs(config.val_pairs)
        train = pairs.rows
    else:
        train, held_out = split_by_image(pairs.rows, config.val_fraction, config.seed)
        val = Pairs(pairs.source, held_out, ()) if held_out else None
    if len(train) < config.batch_size:
        raise UserInputError(
            f"{len(train)} training pairs are fewer than one batch of "
            f"{config.batch_size}; lower --batch-size or add pairs"
        )
    return TrainPlan(config, tuple(train), val), skipped


def split_by_image(
    rows: Sequence[Pair], fraction: float, seed: int
) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
    """Hold out a fraction of the distinct images with all their captions (no leak via
    a second caption of a training image)."""
    images = sorted({row.image for row in rows})
    n_val = round(len(images) * fraction)
    if n_val == 0:
        return tuple(rows), ()
    order = np.random.default_rng(seed).permutation(len(images))
    held = {images[i] for i in order[:n_val]}
    return (
        tuple(r for r in rows if r.image not in held),
        tuple(r for r in rows if r.image in held),
    )


class PixelSource:
    """Preprocessed image tensors by row index; kept in memory when they fit the budget.

    The first pass decodes every image, so an undecodable file is found before training
    starts, not in the middle of epoch three.
    """

    def __init__(self, encoder, paths: Sequence[Path], budget_bytes: int = PIXEL_CACHE_BYTES):
        self.encoder = encoder
        self.paths = list(paths)
        side = encoder.info.image_size
        self.cached = len(self.paths) * 3 * side * side * 2 <= budget_bytes  # float16
        self.tensors: list[torch.Tensor | None] = [None] * len(self.paths)
        self.failed: list[SkippedRow] = []
        for i in range(len(self.paths)):
            pixels = self._decode(i)
            if pixels is None:
                continue
            if self.cached:
                self.tensors[i] = pixels.to(torch.float16)  # half the memory; ample precision

    def usable(self) -> list[int]:
        bad = {s.row for s in self.failed}
        return [i for i, p in enumerate(self.paths) if str(p) not in bad]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        tensors = [self.tensors[i] if self.cached else self._decode(i) for i in indices]
        return torch.stack(tensors).float()  # (B, 3, H, W)

    def _decode(self, i: int) -> torch.Tensor | None:
        from mmindex.data.images import DecodeError, decode_image

        try:
            decoded = decode_image(self.paths[i], self.encoder.info.image_size)
        except DecodeError as exc:
            self.failed.append(SkippedRow(str(self.paths[i]), f"cannot decode: {exc}"))
            return None
        return self.encoder.preprocess(decoded.image)  # (3, H, W)


def epoch_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Shuffled full batches of row indices; the order depends only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    for start in range(0, n_rows - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def local_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This worker's contiguous share of a global batch, in rank order (as gathered)."""
    share = len(batch) // world_size
    return batch[rank * share : (rank + 1) * share]


# ---------------------------------------------------------------- models


def build_start_encoder(config: FinetuneConfig):
    """The encoder training starts from: a spec's weights, or an architecture's random ones."""
    from mmindex.models import clip
    from mmindex.models.registry import load_encoder, register_mmindex_configs

    if config.from_scratch:
        import open_clip

        register_mmindex_configs()
        model_cfg = open_clip.get_model_config(config.from_scratch)
        if model_cfg is None:
            raise ModelError(
                f"unknown architecture '{config.from_scratch}'; "
                "`mmindex models` lists what can be named"
            )
        return clip.build_from_config(
            model_cfg, f"{config.from_scratch}:random", config.from_scratch
        )
    encoder = load_encoder(config.model)
    if not isinstance(encoder, clip.ClipEncoder):
        raise ModelError(
            f"'{config.model}' is not an open_clip model and cannot be fine-tuned; "
            "name an open_clip architecture, hub model or mmindex checkpoint"
        )
    return encoder


def ensure_logit_bias(encoder) -> None:
    """SigLIP needs a learnable bias; a CLIP model gets one, recorded in its config so the
    checkpoint rebuilds it."""
    if getattr(encoder.model, "logit_bias", None) is not None:
        return
    encoder.model.logit_bias = torch.nn.Parameter(torch.tensor(SIGLIP_INIT_BIAS))
    encoder.model_cfg = dict(encoder.model_cfg, init_logit_bias=SIGLIP_INIT_BIAS)


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


# ---------------------------------------------------------------- tower locking


# Parameters after a tower's last stage, by the first name part below the tower (open_clip's
# ViT, ModifiedResNet, text transformer and timm/HF heads). Registration order cannot tell:
# CLIP registers `proj` and `text_projection` on the module itself, before its submodules.
HEAD_NAMES = {"proj", "ln_post", "attnpool", "text_projection", "ln_final", "head", "fc_norm"}
STAGE = re.compile(r"^(.*?(?:(?:resblocks|layers|layer|blocks)\.\d+|layer\d+))\.")


def tower_blocks(model: torch.nn.Module, tower: str) -> list[list[str]]:
    """A tower's parameter names grouped into blocks from input to output.

    The blocks are the repeated stages (`resblocks.K` of a transformer, `layerK` of a
    ResNet); parameters before the first stage (stem, embeddings) form the first group and
    the head (final norm, projection, attention pool) joins the last stage, so unlocking
    the last block always unlocks the head that reads it.
    """
    stem, stages, head = [], {}, []
    for name, _ in model.named_parameters():
        if _tower_of(name) != tower:
            continue
        match = STAGE.match(name)
        if match:
            stages.setdefault(match.group(1), []).append(name)
        elif _first_part(name) in HEAD_NAMES:
            head.append(name)
        else:
            stem.append(name)
    blocks = [stem] + list(stages.values())
    blocks[-1] = blocks[-1] + head
    return [b for b in blocks if b]


def _first_part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] in ("visual", "text") and len(parts) > 1 else parts[0]


def _tower_of(name: str) -> str:
    if name.startswith("visual."):
        return "image"
    if name.startswith("logit_"):
        return "head"
    return "text"  # CLIP keeps its text tower at the top level; CustomTextCLIP under text.


def apply_locks(model: torch.nn.Module, config: FinetuneConfig) -> None:
    """LiT-style locking: freeze a tower except its last `unlock_last` blocks."""
    for tower, locked in (("image", config.lock_image), ("text", config.lock_text)):
        if not locked:
            continue
        blocks = tower_blocks(model, tower)
        n_frozen = max(0, len(blocks) - config.unlock_last)
        frozen = {name for block in blocks[:n_frozen] for name in block}
        for name, param in model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)


def freeze_locked_norm_stats(model: torch.nn.Module) -> None:
    """BatchNorm layers whose weights are frozen keep their running statistics too."""
    for module in model.modules():
        is_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        if is_norm and not any(p.requires_grad for p in module.parameters()):
            module.eval()


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices and kernels only: gains, biases and the logit scale/bias
    (every tensor of fewer than two dimensions) are not pulled towards zero."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name.startswith("logit_") else decay).append(param)
    if not decay and not no_decay:
        raise UserInputError("every parameter is locked; unlock a tower or --unlock-last N")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it pays: CPUs with native bf16 (convolutions ran ~2x faster) and GPUs
    that support it; None means full fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    from contextlib import nullcontext

    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------- the loop


@dataclass
class _Trainer:
    """The pieces of one worker's training run (mutable: the loop advances them)."""

    plan: TrainPlan
    encoder: object
    optimizer: torch.optim.Optimizer
    pixels: PixelSource
    tokens: torch.Tensor  # (N_train, context_length) int64
    rows: list[int]  # usable row indices into plan.train
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int
    world_size: int
    step: int = 0
    history: list[EpochMetrics] = field(default_factory=list)

    @property
    def config(self) -> FinetuneConfig:
        return self.plan.config

    @property
    def steps_per_epoch(self) -> int:
        return len(self.rows) // self.config.batch_size


def train_loop(
    plan: TrainPlan,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> list[EpochMetrics]:
    """Run (or resume) the epochs; rank 0 evaluates and writes a checkpoint after each."""
    config = plan.config
    if config.threads:
        torch.set_num_threads(config.threads)
    trainer = _make_trainer(plan, rank, world_size)
    first = len(trainer.history) + 1
    for epoch in range(first, config.epochs + 1):
        metrics = _train_epoch(trainer, epoch, progress)
        trainer.history.append(metrics)
        if rank == 0:
            save_epoch(trainer)
        if on_epoch is not None:
            on_epoch(metrics)
    return trainer.history


def _make_trainer(plan: TrainPlan, rank: int, world_size: int) -> _Trainer:
    config = plan.config
    torch.manual_seed(config.seed)
    encoder = build_start_encoder(config)
    if config.loss == "siglip":
        ensure_logit_bias(encoder)
    check_device(config.device)  # here, in the process that trains: a Ray worker may differ
    device = torch.device(config.device)
    encoder.model.to(device)
    apply_locks(encoder.model, config)
    optimizer = torch.optim.AdamW(
        parameter_groups(encoder.model, config.weight_decay),
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    pixels = PixelSource(encoder, [p.image for p in plan.train])
    rows = pixels.usable()
    if len(rows) < config.batch_size:
        raise UserInputError(f"only {len(rows)} training images decode; fewer than one batch")
    tokens = encoder.tokenizer([p.caption for p in plan.train]).long()  # (N, L)
    trainer = _Trainer(
        plan,
        encoder,
        optimizer,
        pixels,
        tokens,
        rows,
        device,
        autocast_dtype(config.precision, device),
        rank,
        world_size,
    )
    if config.resume:
        load_resume_state(trainer)
    return trainer


def _train_epoch(trainer: _Trainer, epoch: int, progress: Progress | None) -> EpochMetrics:
    config, model = trainer.config, trainer.encoder.model
    started = time.perf_counter()
    model.train()
    freeze_locked_norm_stats(model)
    losses = []
    batches = epoch_batches(len(trainer.rows), config.batch_size, config.seed, epoch)
    for done, batch in enumerate(batches, start=1):
        rows = [trainer.rows[i] for i in local_slice(batch, trainer.rank, trainer.world_size)]
        losses.append(train_step(trainer, rows))
        if progress is not None:
            progress(f"epoch {epoch}/{config.epochs}", done, trainer.steps_per_epoch)
    val = _validate(trainer) if trainer.rank == 0 else None
    return EpochMetrics(
        epoch=epoch,
        step=trainer.step,
        train_loss=float(np.mean(losses)),
        lr=trainer.optimizer.param_groups[0]["lr"],
        logit_scale=float(model.logit_scale.detach().exp()),
        seconds=round(time.perf_counter() - started, 2),
        val=val,
    )


def train_step(trainer: _Trainer, rows: Sequence[int]) -> float:
    """One optimizer step on this worker's rows; returns the loss of the global batch."""
    config, model = trainer.config, trainer.encoder.model
    lr = lr_at(
        trainer.step,
        trainer.steps_per_epoch * config.epochs,
        int(config.warmup_fraction * trainer.steps_per_epoch * config.epochs),
        config.learning_rate,
    )
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    images = trainer.pixels.batch(rows).to(trainer.device)  # (B, 3, H, W)
    texts = trainer.tokens[list(rows)].to(trainer.device)  # (B, L)
    loss = batch_loss(
        model, images, texts, config.loss, trainer.amp_dtype, trainer.rank, trainer.world_size
    )
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if trainer.world_size > 1:
        combine_gradients(model, trainer.world_size)
    torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], config.grad_clip
    )
    trainer.optimizer.step()
    with torch.no_grad():  # CLIP clamps the temperature so the logits cannot blow up
        model.logit_scale.clamp_(0.0, math.log(config.max_logit_scale))
    trainer.step += 1
    return float(loss.detach())


def batch_loss(
    model, images, texts, kind: str, amp_dtype, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The contrastive loss of the global batch, from this worker's share of it."""
    from mmindex.train.losses import LOSSES, gather_features

    with _autocast(images.device, amp_dtype):
        image_features = model.encode_image(images, normalize=True)  # (B, D)
        text_features = model.encode_text(texts, normalize=True)  # (B, D)
    # The loss runs in fp32: bf16's 8-bit mantissa is too coarse for logits near 100.
    image_features = gather_features(image_features.float(), rank, world_size)  # (W*B, D)
    text_features = gather_features(text_features.float(), rank, world_size)  # (W*B, D)
    scale = model.logit_scale.exp()
    if kind == "siglip":
        return LOSSES[kind](image_features, text_features, scale, model.logit_bias)
    return LOSSES[kind](image_features, text_features, scale)


def combine_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Make every worker hold the single-process gradient of the global batch.

    A tower weight reaches a worker's loss only through that worker's own features, so its
    true gradient is the sum over workers. The logit scale and bias enter every worker's
    loss directly, so each worker already holds their full gradient: those are averaged.
    """
    import torch.distributed as dist

    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for _, g in named])  # one all-reduce instead of hundreds
    dist.all_reduce(flat)
    offset = 0
    for name, grad in named:
        total = flat[offset : offset + grad.numel()].view_as(grad)
        grad.copy_(total / world_size if name.startswith("logit_") else total)
        offset += grad.numel()


def _validate(trainer: _Trainer) -> dict[str, float] | None:
    if trainer.plan.val is None:
        return None
    report = _evaluate(trainer.encoder, trainer.plan.val, trainer.config)
    return recall_summary(report)


def _evaluate(encoder, val: Pairs | None, config: FinetuneConfig) -> RetrievalReport | None:
    """Recall through the project's one evaluation, with the model in eval mode."""
    if val is None:
        return None
    model = encoder.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    amp = autocast_dtype(config.precision, device)
    try:
        with _autocast(device, amp):
            return evaluate_retrieval(encoder, val, batch_size=128)  # inputs go to its device
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- checkpoints and resume


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


def save_epoch(trainer: _Trainer) -> None:
    """Make the output directory a loadable checkpoint of this epoch, then record the
    resume state. Each file is replaced atomically, so an interrupt leaves the last
    finished epoch readable."""
    out = Path(trainer.config.out_dir)
    last = trainer.history[-1]
    _write_checkpoint_files(
        trainer.encoder, out, {"finetune": {"epoch": last.epoch, "finished": False}}
    )
    state_dir = out / RESUME_DIR / f"epoch-{last.epoch:04d}"
    _write_resume_state(trainer, state_dir)
    _atomic_write_text(
        out / RESUME_DIR / "latest.json", json.dumps({"epoch": last.epoch, "dir": state_dir.name})
    )
    for old in (out / RESUME_DIR).glob("epoch-*"):
        if old != state_dir:
            shutil.rmtree(old, ignore_errors=True)


def _write_checkpoint_files(encoder, out: Path, extra: dict) -> None:
    from mmindex.models.clip import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, save_checkpoint

    staging = out / ".writing"
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(encoder, staging, extra)
    for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG):
        os.replace(staging / name, out / name)
    staging.rmdir()


def _write_resume_state(trainer: _Trainer, state_dir: Path) -> None:
    from safetensors.torch import save_file

    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    model_state = {
        k: v.detach().contiguous() for k, v in trainer.encoder.model.state_dict().items()
    }
    save_file(model_state, str(state_dir / "model.safetensors"))
    tensors, groups = flatten_optimizer_state(trainer.optimizer.state_dict())
    save_file(tensors, str(state_dir / "optimizer.safetensors"))
    state = {
        "undecodable": [asdict(row) for row in trainer.pixels.failed],
        "step": trainer.step,
        "history": [asdict(e) for e in trainer.history],
        "param_groups": groups,
    }
    (state_dir / "state.json").write_text(json.dumps(state))


def load_resume_state(trainer: _Trainer) -> None:
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


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------- outputs


def _write_outputs(final, result: FinetuneResult, config: FinetuneConfig) -> None:
    """The final checkpoint (WiSE-FT applied), metrics.json, curves.png and report.txt."""
    out = Path(config.out_dir)
    base = config.model or f"{config.from_scratch}:random"
    extra = {
        "finetune": {
            "finished": True,
            "base": base,
            "wise_ft": config.wise_ft,
            "epochs": config.epochs,
            "after": recall_summary(result.after),
        }
    }
    _write_checkpoint_files(final, out, extra)
    metrics = result.to_dict() | {"config": _config_dict(config)}
    _atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    (out / "report.txt").write_text(format_report(result, config))
    plot_curves(result.history, out / "curves.png")
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)


def _config_dict(config: FinetuneConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def format_report(result: FinetuneResult, config: FinetuneConfig) -> str:
    base = config.model or f"{config.from_scratch} (from scratch)"
    lines = [
        f"mmindex finetune: {base} -> {result.out_dir}",
        (
            f"{result.n_train} training pairs, {result.n_val} validation images, "
            f"{len(result.skipped)} rows skipped, {len(result.history)} epochs "
            f"in {result.seconds / 60:.1f} min"
        ),
    ]
    rows = [("before", result.before), ("fine-tuned", result.finetuned)]
    if config.wise_ft is not None and config.wise_ft != 1.0:
        rows.append((f"WiSE-FT {config.wise_ft:g}", result.after))
    lines.append(f"{'':<14}{'T->I R@1':>10}{'I->T R@1':>10}{'matched T->I':>14}")
    for label, report in rows:
        s = recall_summary(report)
        if s is None:
            continue
        matched = s.get("matched_text_to_image_r1")
        lines.append(
            f"{label:<14}{s['text_to_image_r1']:>10.3f}{s['image_to_text_r1']:>10.3f}"
            + (f"{matched:>14.3f}" if matched is not None else f"{'-':>14}")
        )
    lines += [f"  skipped {s.row}: {s.reason}" for s in result.skipped[:20]]
    return "\n".join(lines) + "\n"


def plot_curves(history: Sequence[EpochMetrics], path: Path) -> None:
    """Loss and validation recall@1 per epoch."""
    from mmindex.core import plots

    epochs = [e.epoch for e in history]
    figure, (loss_axes, recall_axes) = plots.figure(2, (9, 3.5))
    loss_axes.plot(epochs, [e.train_loss for e in history], marker="o")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (
        ("text_to_image_r1", "text→image R@1"),
        ("matched_text_to_image_r1", "matched text→image R@1"),
        ("image_to_text_r1", "image→text R@1"),
    ):
        points = [(e.epoch, e.val[key]) for e in history if e.val and key in e.val]
        if points:
            recall_axes.plot(*zip(*points), marker="o", label=label)
    recall_axes.set(xlabel="epoch", ylabel="recall@1", ylim=(0, 1), title="validation")
    if recall_axes.lines:
        recall_axes.legend(loc="best", fontsize="small")
    plots.save(figure, path)
