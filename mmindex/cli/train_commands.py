"""Commands that make data, train and measure: make-shapes, finetune, train-projector, eval."""

from __future__ import annotations

from pathlib import Path

import typer

from mmindex.cli.app import (
    DeviceOption,
    JsonOption,
    LlmOption,
    app,
    config_option,
    eval_app,
    fail_cleanly,
    print_json,
    progress_reporter,
)
from mmindex.eval.config import VqaConfig
from mmindex.train.config import FinetuneConfig, TrainProjectorConfig


@app.command("make-shapes")
@fail_cleanly
def make_shapes(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)"),
    n: int = typer.Option(5000, "--n", min=1, help="Number of images"),
    seed: int = typer.Option(0, "--seed", help="Split seed: different seeds never share images"),
    size: int = typer.Option(128, "--size", min=32, help="Image side in pixels"),
    background: str = typer.Option(
        "mixed", "--background", help="plain | noisy | gradient | mixed"
    ),
    overwrite: bool = typer.Option(False, "--overwrite"),
    style: str = typer.Option(
        "flat", "--style",
        help="How the scenes are drawn and worded: flat (the original), textured, rotated; "
        "several, comma-separated, take turns (flat,textured)",
    ),
    canvas: int = typer.Option(
        0, "--canvas", min=0, help="Draw each --size scene at a random place of a canvas this "
        "many pixels wide (small objects in a large image; pairs get the scene's box)"),
    as_json: bool = JsonOption,
):
    """Write a synthetic shapes split: PNGs, pairs.parquet and questions.parquet."""
    from dataclasses import asdict

    from mmindex.data.shapes import write_shapes

    summary = write_shapes(
        out, n, seed=seed, size=size, background=background, overwrite=overwrite, style=style,
        canvas=canvas,
    )
    if as_json:
        print_json(asdict(summary))
        return
    typer.echo(f"{summary.n_images} images, {summary.n_questions} questions -> {out}")


@eval_app.command("retrieval")
@fail_cleanly
def eval_retrieval(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs file (Parquet/CSV/JSONL) or folder"),
    model: list[str] = typer.Option(
        ..., "--model",
        help="Model spec (see `mmindex models`); repeat it to compare models, with a "
        "transfer table (trained style -> test style) when the pairs carry styles",
    ),
    as_json: bool = JsonOption,
):
    """Image<->text recall@1/5/10 and median rank, strict and attribute-matched, per style."""
    from mmindex.eval.retrieval import TransferRow, evaluate_retrieval, trained_styles
    from mmindex.eval.retrieval import transfer_table
    from mmindex.models.registry import load_encoder

    reports = [evaluate_retrieval(load_encoder(spec), pairs) for spec in model]
    rows = [TransferRow(spec, trained_styles(spec), r.by_style) for spec, r in zip(model, reports)]
    has_styles = any(r.by_style for r in reports)
    if as_json:
        if len(reports) == 1:
            print_json(reports[0].to_dict() | {"trained_styles": rows[0].trained_styles})
        else:
            print_json({"reports": [r.to_dict() | {"trained_styles": row.trained_styles}
                                    for r, row in zip(reports, rows)]})
        return
    for report in reports:
        _print_retrieval(report.to_dict())
    if has_styles:
        typer.echo("")
        typer.echo(transfer_table(rows), nl=False)


def _print_retrieval(report: dict) -> None:
    typer.echo(f"{report['model']}: {report['n_images']} images, {report['n_texts']} texts")
    _print_metrics(report["metrics"], "")
    for style, metrics in report.get("by_style", {}).items():
        _print_metrics(metrics, f"{style}: ")


def _print_metrics(metrics: dict, prefix: str) -> None:
    for match, directions in metrics.items():
        for direction, m in (directions or {}).items():
            if isinstance(m, dict) and "recall_at_1" in m:
                typer.echo(
                    f"  {prefix}{match:<8} {direction:<14} R@1 {m['recall_at_1']:.3f}  "
                    f"R@5 {m['recall_at_5']:.3f}  R@10 {m['recall_at_10']:.3f}  "
                    f"median rank {m['median_rank']}"
                )


@app.command("finetune")
@fail_cleanly
def finetune_command(
    pairs: Path = typer.Option(
        ...,
        "--pairs",
        help="Pairs file (Parquet/CSV/JSONL) or a folder of images with .txt captions",
    ),
    out: Path = typer.Option(..., "--out", help="Output checkpoint directory (new, or --resume)"),
    model: str | None = config_option(
        FinetuneConfig, "model", "--model", help="Model to start from"
    ),
    from_scratch: str | None = config_option(
        FinetuneConfig,
        "from_scratch",
        "--from-scratch",
        help="Train this architecture from random weights instead, e.g. mmindex-shapes-rn",
    ),
    epochs: int = config_option(FinetuneConfig, "epochs", "--epochs", min=1),
    batch_size: int = config_option(FinetuneConfig, "batch_size", "--batch-size", min=2),
    lr: float | None = config_option(
        FinetuneConfig,
        "lr",
        "--lr",
        help="Peak learning rate [default: 1e-3 from scratch, 1e-5 fine-tuning]",
    ),
    val: Path | None = typer.Option(None, "--val", help="Validation pairs"),
    val_fraction: float = config_option(
        FinetuneConfig,
        "val_fraction",
        "--val-fraction",
        help="Images held out for validation when --val is not given",
    ),
    lock_image: bool = config_option(
        FinetuneConfig, "lock_image", "--lock-image", help="Freeze the image tower (LiT)"
    ),
    lock_text: bool = config_option(
        FinetuneConfig, "lock_text", "--lock-text", help="Freeze the text tower"
    ),
    unlock_last: int = config_option(
        FinetuneConfig,
        "unlock_last",
        "--unlock-last",
        min=0,
        help="Keep the last N blocks of a locked tower trainable",
    ),
    wise_ft: float | None = config_option(
        FinetuneConfig,
        "wise_ft",
        "--wise-ft",
        help="WiSE-FT: mix ALPHA of the fine-tuned weights with 1-ALPHA of the start",
    ),
    loss: str = config_option(FinetuneConfig, "loss", "--loss", help="clip | siglip"),
    device: str = DeviceOption,
    workers: int = config_option(
        FinetuneConfig, "workers", "--workers", min=1, help="Ray Train workers"
    ),
    ray_address: str | None = config_option(
        FinetuneConfig,
        "ray_address",
        "--ray-address",
        help="Existing Ray cluster for the workers [default: a local Ray]",
    ),
    precision: str = config_option(
        FinetuneConfig, "precision", "--precision", help="auto | bf16 | fp32"
    ),
    seed: int = config_option(FinetuneConfig, "seed", "--seed"),
    resume: bool = config_option(
        FinetuneConfig, "resume", "--resume", help="Continue from the last finished epoch"
    ),
    augment: str = config_option(
        FinetuneConfig, "augment", "--augment",
        help="Caption-preserving image augmentation: none | light | strong (crops that keep "
        "every object, small tilts, blur, noise, JPEG, brightness/contrast)",
    ),
    as_json: bool = JsonOption,
):
    """Contrastive fine-tuning (or training from scratch) on (image, caption) pairs."""
    from mmindex.train.finetune import finetune, format_report

    config = FinetuneConfig(
        pairs=pairs,
        out_dir=out,
        model=model,
        from_scratch=from_scratch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val_pairs=val,
        val_fraction=val_fraction,
        lock_image=lock_image,
        lock_text=lock_text,
        unlock_last=unlock_last,
        wise_ft=wise_ft,
        loss=loss,
        device=device,
        workers=workers,
        ray_address=ray_address,
        precision=precision,
        seed=seed,
        resume=resume,
        augment=augment,
    )
    with progress_reporter(enabled=not as_json) as progress:
        result = finetune(config, progress)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(format_report(result, config), nl=False)


# ---------------------------------------------------------------- grounded answers (mmindex ask)


@app.command("train-projector")
@fail_cleanly
def train_projector_command(
    model: str = typer.Option(
        ..., "--model", help="The CLIP whose vision tokens are projected (use the index's model)"
    ),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write"),
    captions: Path | None = config_option(
        TrainProjectorConfig, "captions", "--captions", help="Pairs file: stage 1"
    ),
    questions: Path | None = config_option(
        TrainProjectorConfig,
        "questions",
        "--questions",
        help="image/question/answer table: stage 2",
    ),
    llm: str | None = LlmOption,
    projector: str = config_option(
        TrainProjectorConfig, "projector", "--projector", help="linear | mlp2x_gelu"
    ),
    image_tokens: int = config_option(
        TrainProjectorConfig,
        "image_tokens",
        "--image-tokens",
        min=0,
        help="Pool each image to N tokens (0: keep all)",
    ),
    vision_layer: int = config_option(
        TrainProjectorConfig,
        "vision_layer",
        "--vision-layer",
        max=-1,
        help="The vision tower's "
        "block to take tokens from: -1 the last, -2 the one "
        "before (a ResNet's is twice as fine)",
    ),
    token_positions: bool = config_option(
        TrainProjectorConfig,
        "token_positions",
        "--token-positions",
        help="Learn an "
        "embedding per token position, added to the "
        "vision tokens before the projector",
    ),
    fusion: str = config_option(
        TrainProjectorConfig, "fusion", "--fusion",
        help="How the image joins the LLM: prefix (projected tokens before the text, LLaVA), "
        "cross-attention (gated blocks in the LLM, Flamingo) or early (raw patches as tokens, "
        "no vision tower)",
    ),
    cross_every: int = config_option(
        TrainProjectorConfig, "cross_every", "--cross-every", min=1,
        help="cross-attention: a block before every Nth decoder layer",
    ),
    latents: int = config_option(
        TrainProjectorConfig, "latents", "--latents", min=0,
        help="cross-attention: resample each image to N tokens (Perceiver; 0: keep them)",
    ),
    patch_size: int = config_option(
        TrainProjectorConfig, "patch_size", "--patch-size", min=1, help="early: patch side"
    ),
    image_size: int = config_option(
        TrainProjectorConfig, "image_size", "--image-size", min=8,
        help="early: images resized to this side",
    ),
    caption_steps: int = config_option(
        TrainProjectorConfig, "caption_steps", "--caption-steps", min=0
    ),
    qa_steps: int = config_option(TrainProjectorConfig, "qa_steps", "--qa-steps", min=0),
    caption_minutes: float | None = config_option(
        TrainProjectorConfig, "caption_minutes", "--caption-minutes"
    ),
    qa_minutes: float | None = config_option(TrainProjectorConfig, "qa_minutes", "--qa-minutes"),
    batch_size: int = config_option(TrainProjectorConfig, "batch_size", "--batch-size", min=1),
    lr: float = config_option(TrainProjectorConfig, "lr", "--lr"),
    unfreeze_last: int = config_option(
        TrainProjectorConfig,
        "unfreeze_last",
        "--unfreeze-last",
        min=0,
        help="Train the LLM's last N layers too",
    ),
    lora_rank: int = config_option(
        TrainProjectorConfig,
        "lora_rank",
        "--lora-rank",
        min=0,
        help="Train LoRA adapters of this rank on the LLM's linear layers (0: none)",
    ),
    llm_lr: float = config_option(
        TrainProjectorConfig,
        "llm_lr",
        "--llm-lr",
        help="Learning rate of the LLM's trained layers or adapters",
    ),
    distractor_rate: float = config_option(
        TrainProjectorConfig,
        "distractor_rate",
        "--distractor-rate",
        help="Share of QA prompts with other images after the target",
    ),
    tiles: int = config_option(
        TrainProjectorConfig,
        "tiles",
        "--tiles",
        min=0,
        help="QA prompts also show 0..N of the image's tiles that best match the question "
        "(N drawn per prompt), as `ask --tiles` picks them from --index",
    ),
    tiles_index: Path | None = config_option(
        TrainProjectorConfig,
        "index",
        "--index",
        help="With --tiles: an index of the questions' images ingested with --tiles",
    ),
    precision: str = config_option(
        TrainProjectorConfig, "precision", "--precision", help="auto | bf16 (autocast) | fp32"
    ),
    threads: int | None = config_option(
        TrainProjectorConfig,
        "threads",
        "--threads",
        min=1,
        help="Torch threads (1 is fastest on a CPU shared with other jobs)",
    ),
    init_from: Path | None = config_option(
        TrainProjectorConfig,
        "init_from",
        "--init-from",
        help="Continue from this projector checkpoint (same CLIP and LLM)",
    ),
    seed: int = config_option(TrainProjectorConfig, "seed", "--seed"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Train the projector between a CLIP and the LLM (stage 1 captions, stage 2 QA)."""
    from mmindex.train.projector import train_projector

    config = TrainProjectorConfig(
        vision_model=model,
        out_dir=out,
        captions=captions,
        questions=questions,
        llm=llm,
        projector=projector,
        image_tokens=image_tokens or None,
        vision_layer=vision_layer,
        token_positions=token_positions,
        fusion=fusion,
        cross_every=cross_every,
        latents=latents,
        patch_size=patch_size,
        image_size=image_size,
        caption_steps=caption_steps,
        qa_steps=qa_steps,
        caption_minutes=caption_minutes,
        qa_minutes=qa_minutes,
        batch_size=batch_size,
        lr=lr,
        llm_lr=llm_lr,
        unfreeze_last=unfreeze_last,
        lora_rank=lora_rank,
        distractor_rate=distractor_rate,
        tiles=tiles,
        index=tiles_index,
        precision=precision,
        threads=threads,
        init_from=init_from,
        seed=seed,
        device=device,
    )
    with progress_reporter(enabled=not as_json) as bar:
        report = train_projector(config, bar)
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(f"{report.n_images} images' tokens cached in {report.feature_seconds:.0f}s")
    if report.earlier_stages:
        typer.echo(
            f"  continued from {init_from}, trained before for "
            f"{sum(s.steps for s in report.earlier_stages)} steps: "
            + ", ".join(f"{s.name} {s.steps}" for s in report.earlier_stages)
        )
    for stage in report.stages:
        typer.echo(
            f"  {stage.name:<9} {stage.steps} steps in {stage.seconds:.0f}s, loss "
            f"{stage.first_loss:.3f} -> {stage.last_loss:.3f}"
        )
    typer.echo(f"-> {report.out_dir}")


@eval_app.command("vqa")
@fail_cleanly
def eval_vqa(
    questions: Path = typer.Option(..., "--questions", help="Held-out image/question/answer/kind"),
    projector: list[Path] = typer.Option(..., "--projector", help="Projector checkpoint; "
                                         "repeat it to compare several (e.g. the three "
                                         "fusions), one column each"),
    train_questions: Path | None = config_option(
        VqaConfig,
        "train_questions",
        "--train-questions",
        help="For the per-question majority-answer prior",
    ),
    per_kind: int = config_option(
        VqaConfig, "per_kind", "--per-kind", min=0, help="Questions per kind (0: all)"
    ),
    modes: str | None = config_option(
        VqaConfig,
        "modes",
        "--modes",
        help="full,text,random; with several images per question joint,each [default: all]",
    ),
    images_per_question: int = config_option(
        VqaConfig,
        "images_per_question",
        "--images-per-question",
        min=1,
        help="Show each question's image among distractors that lack what it names",
    ),
    pairs: Path | None = config_option(
        VqaConfig,
        "pairs",
        "--pairs",
        help="The images' objects, for distractors [default: pairs.parquet beside --questions]",
    ),
    tiles: str | None = config_option(
        VqaConfig, "tiles", "--tiles", help="Token budgets, e.g. 0,1,2,4: a column per budget "
        "b, each question shown its image and the b tiles `ask --tiles b` picks from --index"),
    tiles_index: Path | None = config_option(
        VqaConfig, "index", "--index",
        help="With --tiles: an index of the questions' images ingested with --tiles"),
    batch_size: int = config_option(VqaConfig, "batch_size", "--batch-size", min=1),
    precision: str = config_option(
        VqaConfig, "precision", "--precision", help="auto | bf16 (autocast) | fp32"
    ),
    threads: int | None = typer.Option(None, "--threads", min=1),
    llm: str | None = LlmOption,
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw the table as bars into this PNG file"
    ),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """VQA exact match per question kind: full model vs text only vs random image tokens."""
    from mmindex.eval.vqa import compare_checkpoints, format_vqa, plot_vqa

    if threads:
        import torch

        torch.set_num_threads(threads)
    with progress_reporter(enabled=not as_json) as progress:
        report = compare_checkpoints(
            VqaConfig(
                questions=questions,
                checkpoint=projector[0],
                llm=llm,
                train_questions=train_questions,
                per_kind=per_kind or None,
                modes=_names(modes),
                batch_size=batch_size,
                precision=precision,
                device=device,
                images_per_question=images_per_question,
                pairs=pairs,
                tiles=_budgets(tiles),
                index=tiles_index,
            ),
            projector,
            progress,
        )
    if plot:
        plot_vqa(report, plot)
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(format_vqa(report), nl=False)


def _budgets(text: str | None) -> tuple[int, ...] | None:
    """`--tiles 0,1,4` -> (0, 1, 4); a value that is not a whole number is refused by name."""
    from mmindex.errors import UserInputError

    try:
        return tuple(int(b) for b in _names(text)) if _names(text) else None
    except ValueError:
        raise UserInputError(f"--tiles takes whole numbers of tiles separated by commas "
                             f"(e.g. 0,1,2,4), not {text!r}") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (None when not given)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else None
