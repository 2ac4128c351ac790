"""The shapes measurement of `mmindex finetune` (issue 4); not part of the test suite.

    python benchmarks/finetune_shapes.py data  WORK        # the four shapes splits
    python benchmarks/finetune_shapes.py scratch WORK      # train mmindex-shapes-rn from nothing
    python benchmarks/finetune_shapes.py shift WORK        # fine-tune onto the shifted split
    python benchmarks/finetune_shapes.py table WORK        # recall table of every model

Splits: train (10k, seed 0, 96 px, plain/noisy), val (1k, seed 1, same renderer), and a
shifted domain: gradient backgrounds rendered at 64 px (upscaled to the model's 96 px,
so edges are softer), shift-train (3k, seed 2) and shift-val (1k, seed 3).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from mmindex.data.shapes import write_shapes
from mmindex.evaluate import evaluate_retrieval, hit_ranks
from mmindex.finetune import FinetuneConfig, finetune, interpolate_weights, recall_summary

SPLITS = {  # name: (n, seed, size, background)
    "train": (10_000, 0, 96, "mixed"),
    "val": (1_000, 1, 96, "mixed"),
    "shift-train": (3_000, 2, 64, "gradient"),
    "shift-val": (1_000, 3, 64, "gradient"),
}
SCRATCH = {"from_scratch": "mmindex-shapes-rn", "epochs": 8, "batch_size": 256, "lr": 1e-3}
SHIFT = {"epochs": 3, "batch_size": 128, "lr": 1e-4}
WISE_ALPHAS = (0.5,)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_data(work: Path) -> None:
    for name, (n, seed, size, background) in SPLITS.items():
        if not (work / name / "pairs.parquet").exists():
            write_shapes(work / name, n, seed=seed, size=size, background=background)
            log(f"wrote {name}")


def train_scratch(work: Path) -> None:
    config = FinetuneConfig(
        pairs=work / "train" / "pairs.parquet",
        out_dir=work / "scratch",
        val_pairs=work / "val" / "pairs.parquet",
        **SCRATCH,
    )
    result = finetune(
        config,
        on_epoch=lambda m: log(
            f"epoch {m.epoch}: loss {m.train_loss:.3f} {m.seconds:.0f}s val {m.val}"
        ),
    )
    log(f"scratch done in {result.seconds / 60:.1f} min: {recall_summary(result.after)}")


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
    from mmindex.finetune import _encoder_with, _write_checkpoint_files
    from mmindex.models.clip import load_checkpoint

    start, tuned = load_checkpoint(work / "scratch"), load_checkpoint(work / "shifted")
    for alpha in WISE_ALPHAS:
        mixed = interpolate_weights(start.model.state_dict(), tuned.model.state_dict(), alpha)
        out = work / f"wise-{alpha:g}"
        out.mkdir(exist_ok=True)
        _write_checkpoint_files(_encoder_with(start, mixed), out, {"wise_ft": alpha})


def recall_by_count(encoder, pairs_path: Path) -> dict[int, float]:
    """Matched text→image recall@1 over the whole split, grouped by the objects a query names."""
    from mmindex.data.pairs import load_pairs
    from mmindex.evaluate import _encode_images, _encode_texts, _group_by_image

    pairs = load_pairs(pairs_path)
    groups = _group_by_image(pairs)
    images, kept, _ = _encode_images(encoder, groups, 128)  # (N, D)
    captions = [c for g in kept for c in g.captions]
    texts = _encode_texts(encoder, captions, 128)  # (N_txt, D)
    key_ids = {k: i for i, k in enumerate(dict.fromkeys(g.key for g in kept))}
    image_groups = np.array([key_ids[g.key] for g in kept])
    text_image = np.repeat(np.arange(len(kept)), [len(g.captions) for g in kept])
    ranks = hit_ranks(texts, images, image_groups[text_image], image_groups)
    counts = np.array([len(kept[i].key) for i in text_image])  # a key holds one item per object
    return {int(c): float(np.mean(ranks[counts == c] <= 1)) for c in sorted(set(counts))}


def table(work: Path) -> None:
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
            pairs = work / split / "pairs.parquet"
            s = recall_summary(evaluate_retrieval(encoder, pairs, batch_size=128))
            by_count = recall_by_count(encoder, pairs)
            print(
                f"| {name} | {split} | {s['text_to_image_r1']:.3f} | "
                f"{s['matched_text_to_image_r1']:.3f} | {s['matched_image_to_text_r1']:.3f} | "
                f"{' / '.join(f'{by_count[c]:.3f}' for c in sorted(by_count))} |",
                flush=True,
            )


def main() -> None:
    stage, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    {"data": make_data, "scratch": train_scratch, "shift": train_shift, "table": table}[stage](work)


if __name__ == "__main__":
    main()
