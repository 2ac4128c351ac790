"""Contrastive fine-tuning (or training from scratch) of a CLIP-style encoder on pairs.

    finetune(config) = load pairs -> recall before -> train_loop (here, or on Ray workers)
                       -> WiSE-FT -> recall after -> checkpoint, metrics.json, curves.png

`train_loop` is the one training loop: the local run calls it in-process and the Ray run
(`ray_backend`) calls it inside each worker, which builds its own model from the plan.
Every finished epoch leaves the output directory a loadable checkpoint and a resume state,
so Ctrl-C loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mmindex.core.atomic import write_atomically
from mmindex.core.progress import Progress
from mmindex.data.pairs import Pairs, SkippedRow, load_pairs
from mmindex.errors import UserInputError
from mmindex.eval.retrieval import RetrievalReport
from mmindex.train.checkpoints import (
    RESUME_DIR,
    _encoder_with,
    _prepare_out_dir,
    _write_checkpoint_files,
    interpolate_weights,
    load_checkpoint_weights,
    pair_styles,
    read_training_record,
    training_record,
)
from mmindex.train.config import EpochMetrics, FinetuneConfig, TrainPlan
from mmindex.train.data import split_by_image
from mmindex.train.loop import _evaluate, build_start_encoder, recall_summary, train_loop


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
    train_styles: tuple[str | None, ...] = ()  # each training pair's style (None: unknown)

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
            "train_styles": pair_styles(self.train_styles),
        }


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
        tuple(p.style for p in plan.train),
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
        | training_record(config, result.train_styles)
    }
    _write_checkpoint_files(final, out, extra)
    metrics = result.to_dict() | {"config": _config_dict(config)}
    write_atomically(out / "metrics.json", json.dumps(metrics, indent=2))
    write_atomically(out / "report.txt", format_report(result, config))
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
