"""The one training loop: the local run calls `train_loop` in-process and the Ray backend
calls it inside each worker, which builds its own model from the plan."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mmindex.core.precision import autocast, resolve_precision
from mmindex.core.progress import Progress
from mmindex.data.augment import augment_policy
from mmindex.data.pairs import Pairs
from mmindex.errors import ModelError, UserInputError
from mmindex.eval.retrieval import RetrievalReport, evaluate_retrieval
from mmindex.models.registry import check_device
from mmindex.train.checkpoints import load_resume_state, save_epoch
from mmindex.train.config import SIGLIP_INIT_BIAS, EpochMetrics, FinetuneConfig, TrainPlan
from mmindex.train.data import AugmentedPixelSource, PixelSource, epoch_batches, local_slice
from mmindex.train.locking import apply_locks, freeze_locked_norm_stats, parameter_groups


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


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class _Trainer:
    """The pieces of one worker's training run (mutable: the loop advances them)."""

    plan: TrainPlan
    encoder: object
    optimizer: torch.optim.Optimizer
    pixels: PixelSource | AugmentedPixelSource
    tokens: torch.Tensor  # (N_train, context_length) int64
    rows: list[int]  # usable row indices into plan.train
    device: torch.device
    precision: str  # resolved: fp32 | bf16
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
    pixels = training_pixels(encoder, plan)
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
        resolve_precision(config.precision, device),
        rank,
        world_size,
    )
    if config.resume:
        load_resume_state(trainer)
    return trainer


def training_pixels(encoder, plan: TrainPlan) -> PixelSource | AugmentedPixelSource:
    """The training images as the loop reads them: augmented afresh each step, or fixed."""
    policy = augment_policy(plan.config.augment)
    if policy is None:
        return PixelSource(encoder, [p.image for p in plan.train])
    return AugmentedPixelSource(encoder, plan.train, policy, plan.config.seed)


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
    images = trainer.pixels.batch(rows, trainer.step).to(trainer.device)  # (B, 3, H, W)
    texts = trainer.tokens[list(rows)].to(trainer.device)  # (B, L)
    loss = batch_loss(
        model, images, texts, config.loss, trainer.precision, trainer.rank, trainer.world_size
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
    model, images, texts, kind: str, precision: str, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The contrastive loss of the global batch, from this worker's share of it."""
    from mmindex.train.losses import LOSSES, gather_features

    with autocast(precision, images.device):
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
    try:
        with autocast(config.precision, device):
            return evaluate_retrieval(encoder, val, batch_size=128)  # inputs go to its device
    finally:
        model.train(was_training)


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
