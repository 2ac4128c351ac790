"""The shapes measurement of `mmindex finetune` (issue 4); not part of the test suite.

    python benchmarks/finetune_shapes.py data  WORK        # the four shapes splits
    python benchmarks/finetune_shapes.py scratch WORK      # train mmindex-shapes-rn from nothing
                                                           # (8 epochs, then 6 more)
    python benchmarks/finetune_shapes.py shift WORK        # fine-tune onto the shifted split
    python benchmarks/finetune_shapes.py table WORK        # recall table of every model

Splits: train (10k, seed 0, 96 px, plain/noisy), val (1k, seed 1, same renderer), and a
shifted domain: gradient backgrounds rendered at 64 px (upscaled to the model's 96 px,
so edges are softer), shift-train (3k, seed 2) and shift-val (1k, seed 3).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mmindex.data.shapes import write_shapes
from mmindex.eval.retrieval import hit_ranks, retrieval_metrics
from mmindex.train.checkpoints import interpolate_weights
from mmindex.train.config import FinetuneConfig
from mmindex.train.finetune import finetune
from mmindex.train.loop import recall_summary

SPLITS = {  # name: (n, seed, size, background)
    "train": (10_000, 0, 96, "mixed"),
    "val": (1_000, 1, 96, "mixed"),
    "shift-train": (3_000, 2, 64, "gradient"),
    "shift-val": (1_000, 3, 64, "gradient"),
}
SCRATCH = {"from_scratch": "mmindex-shapes-rn", "epochs": 8, "batch_size": 256, "lr": 1e-3}
CONTINUE = {"epochs": 6, "lr": 5e-4}
SHIFT = {"epochs": 2, "batch_size": 128, "lr": 2e-4}
WISE_ALPHAS = (0.5,)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_data(work: Path) -> None:
    for name, (n, seed, size, background) in SPLITS.items():
        if not (work / name / "pairs.parquet").exists():
            write_shapes(work / name, n, seed=seed, size=size, background=background)
            log(f"wrote {name}")


def train_scratch(work: Path) -> None:
    """8 epochs from random weights, then 6 more from that checkpoint at half the rate."""
    first = FinetuneConfig(
        pairs=work / "train" / "pairs.parquet",
        out_dir=work / "scratch-8",
        val_pairs=work / "val" / "pairs.parquet",
        **SCRATCH,
    )
    second = replace(
        first,
        out_dir=work / "scratch",
        from_scratch=None,
        model=str(work / "scratch-8"),
        **CONTINUE,
    )
    for config in (first, second):
        result = finetune(config, on_epoch=_log_epoch)
        log(
            f"{config.out_dir.name} done in {result.seconds / 60:.1f} min: "
            f"{recall_summary(result.after)}"
        )


def _log_epoch(m) -> None:
    log(f"epoch {m.epoch}: loss {m.train_loss:.3f} {m.seconds:.0f}s val {m.val}")


def train_shift(work: Path) -> None:
    config = FinetuneConfig(
        pairs=work / "shift-train" / "pairs.parquet",
        out_dir=work / "shifted",
        model=str(work / "scratch"),
        val_pairs=work / "shift-val" / "pairs.parquet",
        **SHIFT,
    )
    result = finetune(config, on_epoch=lambda m: log(f"shift epoch {m.epoch}: {m.val}"))
    log(f"shift fine-tune done in {result.seconds / 60:.1f} min")
    write_wise_models(work)


def write_wise_models(work: Path) -> None:
    """WiSE-FT checkpoints between the scratch model and the shifted fine-tune."""
    from mmindex.train.checkpoints import _encoder_with, _write_checkpoint_files
    from mmindex.models.clip import load_checkpoint

    start, tuned = load_checkpoint(work / "scratch"), load_checkpoint(work / "shifted")
    for alpha in WISE_ALPHAS:
        mixed = interpolate_weights(start.model.state_dict(), tuned.model.state_dict(), alpha)
        out = work / f"wise-{alpha:g}"
        out.mkdir(exist_ok=True)
        _write_checkpoint_files(_encoder_with(start, mixed), out, {"wise_ft": alpha})


def split_scores(encoder, pairs_path: Path) -> tuple[dict, dict[int, float]]:
    """Recall@1 summary of a split and matched text→image recall@1 by the number of objects
    a query names (ranked over the whole split); the images are encoded once for both."""
    from mmindex.data.pairs import load_pairs
    from mmindex.eval.retrieval import _encode_images, _encode_texts, _group_by_image

    groups = _group_by_image(load_pairs(pairs_path))
    images, kept, _ = _encode_images(encoder, groups, 128)  # (N_img, D)
    captions = [c for g in kept for c in g.captions]
    texts = _encode_texts(encoder, captions, 128)  # (N_txt, D)
    text_image = np.repeat(np.arange(len(kept)), [len(g.captions) for g in kept])  # (N_txt,)
    keys = [g.key for g in kept]
    metrics = retrieval_metrics(images, texts, text_image, keys)
    key_ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    image_groups = np.array([key_ids[key] for key in keys])  # (N_img,)
    ranks = hit_ranks(texts, images, image_groups[text_image], image_groups)  # (N_txt,)
    counts = np.array([len(keys[i]) for i in text_image])  # a key holds one item per object
    by_count = {int(c): float(np.mean(ranks[counts == c] <= 1)) for c in sorted(set(counts))}
    return metrics, by_count


def table(work: Path) -> None:
    import torch

    from mmindex.models.registry import load_encoder

    models = ["scratch", "shifted"] + [f"wise-{a:g}" for a in WISE_ALPHAS]
    print(
        "| model | split | strict T→I R@1 | matched T→I R@1 | matched I→T R@1 | "
        "matched T→I R@1 by objects (1/2/3) |"
    )
    print("|---|---|---|---|---|---|")
    for name in models:
        if not (work / name / "model.safetensors").exists():
            continue
        encoder = load_encoder(str(work / name))
        for split in ("val", "shift-val"):
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as the per-epoch validation
                metrics, by_count = split_scores(encoder, work / split / "pairs.parquet")
            strict, matched = metrics.strict, metrics.matched
            print(
                f"| {name} | {split} | {strict.text_to_image.recall_at_1:.3f} | "
                f"{matched.text_to_image.recall_at_1:.3f} | "
                f"{matched.image_to_text.recall_at_1:.3f} | "
                f"{' / '.join(f'{by_count[c]:.3f}' for c in sorted(by_count))} |",
                flush=True,
            )


def main() -> None:
    stage, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    {"data": make_data, "scratch": train_scratch, "shift": train_shift, "table": table}[stage](work)


if __name__ == "__main__":
    main()
