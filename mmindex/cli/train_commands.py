"""Commands that make data, train and measure: make-shapes, finetune, train-projector, eval."""

from __future__ import annotations

from pathlib import Path

import typer

from mmindex.cli.app import (
    DeviceOption,
    JsonOption,
    LlmOption,
    app,
    eval_app,
    fail_cleanly,
    print_json,
    progress_reporter,
)


@app.command("make-shapes")
@fail_cleanly
def make_shapes(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)"),
    n: int = typer.Option(5000, "--n", min=1, help="Number of images"),
    seed: int = typer.Option(0, "--seed", help="Split seed: different seeds never share images"),
    size: int = typer.Option(128, "--size", min=32, help="Image side in pixels"),
    background: str = typer.Option("mixed", "--background", help="plain | noisy | gradient | mixed"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JsonOption,
):
    """Write a synthetic shapes split: PNGs, pairs.parquet and questions.parquet."""
    from dataclasses import asdict

    from mmindex.data.shapes import write_shapes

    summary = write_shapes(out, n, seed=seed, size=size, background=background,
                           overwrite=overwrite)
    if as_json:
        print_json(asdict(summary))
        return
    typer.echo(f"{summary.n_images} images, {summary.n_questions} questions -> {out}")


@eval_app.command("retrieval")
@fail_cleanly
def eval_retrieval(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs file (Parquet/CSV/JSONL) or folder"),
    model: str = typer.Option(..., "--model", help="Model spec (see `mmindex models`)"),
    as_json: bool = JsonOption,
):
    """Image<->text recall@1/5/10 and median rank, strict and attribute-matched."""
    from mmindex.eval.retrieval import evaluate_retrieval
    from mmindex.models.registry import load_encoder

    report = evaluate_retrieval(load_encoder(model), pairs)
    if as_json:
        print_json(report.to_dict())
        return
    _print_retrieval(report.to_dict())


def _print_retrieval(report: dict) -> None:
    typer.echo(f"{report['model']}: {report['n_images']} images, {report['n_texts']} texts")
    for match, directions in report["metrics"].items():
        for direction, m in (directions or {}).items():
            if isinstance(m, dict) and "recall_at_1" in m:
                typer.echo(f"  {match:<8} {direction:<14} R@1 {m['recall_at_1']:.3f}  "
                           f"R@5 {m['recall_at_5']:.3f}  R@10 {m['recall_at_10']:.3f}  "
                           f"median rank {m['median_rank']}")


@app.command("finetune")
@fail_cleanly
def finetune_command(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs file (Parquet/CSV/JSONL) or a folder "
                               "of images with .txt captions"),
    out: Path = typer.Option(..., "--out", help="Output checkpoint directory (new, or --resume)"),
    model: str | None = typer.Option(None, "--model", help="Model to start from"),
    from_scratch: str | None = typer.Option(None, "--from-scratch", help="Train this "
                                               "architecture from random weights instead, "
                                               "e.g. mmindex-shapes-rn"),
    epochs: int = typer.Option(5, "--epochs", min=1),
    batch_size: int = typer.Option(64, "--batch-size", min=2),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate [default: 1e-3 "
                                       "from scratch, 1e-5 fine-tuning]"),
    val: Path | None = typer.Option(None, "--val", help="Validation pairs"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Images held out for "
                                       "validation when --val is not given"),
    lock_image: bool = typer.Option(False, "--lock-image", help="Freeze the image tower (LiT)"),
    lock_text: bool = typer.Option(False, "--lock-text", help="Freeze the text tower"),
    unlock_last: int = typer.Option(0, "--unlock-last", min=0, help="Keep the last N blocks "
                                    "of a locked tower trainable"),
    wise_ft: float | None = typer.Option(None, "--wise-ft", help="WiSE-FT: mix ALPHA of the "
                                            "fine-tuned weights with 1-ALPHA of the start"),
    loss: str = typer.Option("clip", "--loss", help="clip | siglip"),
    device: str = DeviceOption,
    workers: int = typer.Option(1, "--workers", min=1, help="Ray Train workers"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster "
                                              "for the workers [default: a local Ray]"),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 | fp32"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last finished epoch"),
    as_json: bool = JsonOption,
):
    """Contrastive fine-tuning (or training from scratch) on (image, caption) pairs."""
    from mmindex.train.config import FinetuneConfig
    from mmindex.train.finetune import finetune, format_report

    config = FinetuneConfig(pairs=pairs, out_dir=out, model=model, from_scratch=from_scratch,
                            epochs=epochs, batch_size=batch_size, lr=lr, val_pairs=val,
                            val_fraction=val_fraction, lock_image=lock_image,
                            lock_text=lock_text, unlock_last=unlock_last, wise_ft=wise_ft,
                            loss=loss, device=device, workers=workers, ray_address=ray_address,
                            precision=precision,
                            seed=seed, resume=resume)
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
    model: str = typer.Option(..., "--model", help="The CLIP whose vision tokens are projected "
                              "(use the index's model)"),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write"),
    captions: Path | None = typer.Option(None, "--captions", help="Pairs file: stage 1"),
    questions: Path | None = typer.Option(None, "--questions", help="image/question/answer "
                                             "table: stage 2"),
    llm: str | None = LlmOption,
    projector: str = typer.Option("mlp2x_gelu", "--projector", help="linear | mlp2x_gelu"),
    image_tokens: int = typer.Option(16, "--image-tokens", min=0, help="Pool each image to N "
                                     "tokens (0: keep all)"),
    vision_layer: int = typer.Option(-1, "--vision-layer", max=-1, help="The vision tower's "
                                     "block to take tokens from: -1 the last, -2 the one "
                                     "before (a ResNet's is twice as fine)"),
    token_positions: bool = typer.Option(False, "--token-positions", help="Learn an "
                                         "embedding per token position, added to the "
                                         "vision tokens before the projector"),
    caption_steps: int = typer.Option(0, "--caption-steps", min=0),
    qa_steps: int = typer.Option(500, "--qa-steps", min=0),
    caption_minutes: float | None = typer.Option(None, "--caption-minutes"),
    qa_minutes: float | None = typer.Option(None, "--qa-minutes"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    unfreeze_last: int = typer.Option(0, "--unfreeze-last", min=0, help="Train the LLM's last "
                                      "N layers too"),
    lora_rank: int = typer.Option(0, "--lora-rank", min=0, help="Train LoRA adapters of this "
                                  "rank on the LLM's linear layers (0: none)"),
    llm_lr: float = typer.Option(1e-4, "--llm-lr", help="Learning rate of the LLM's trained "
                                 "layers or adapters"),
    distractor_rate: float = typer.Option(0.0, "--distractor-rate", help="Share of QA prompts "
                                          "with other images after the target"),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 (autocast) | fp32"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (1 "
                                          "is fastest on a CPU shared with other jobs)"),
    init_from: Path | None = typer.Option(None, "--init-from", help="Continue from this "
                                             "projector checkpoint (same CLIP and LLM)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Train the projector between a CLIP and the LLM (stage 1 captions, stage 2 QA)."""
    from mmindex.train.projector import TrainProjectorConfig, train_projector

    config = TrainProjectorConfig(
        vision_model=model, out_dir=out, captions=captions, questions=questions, llm=llm,
        projector=projector, image_tokens=image_tokens or None, vision_layer=vision_layer,
        token_positions=token_positions,
        caption_steps=caption_steps, qa_steps=qa_steps, caption_minutes=caption_minutes,
        qa_minutes=qa_minutes, batch_size=batch_size, lr=lr, llm_lr=llm_lr,
        unfreeze_last=unfreeze_last, lora_rank=lora_rank, distractor_rate=distractor_rate,
        precision=precision, threads=threads, init_from=init_from, seed=seed, device=device)
    with progress_reporter(enabled=not as_json) as bar:
        report = train_projector(config, bar)
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(f"{report.n_images} images' tokens cached in {report.feature_seconds:.0f}s")
    if report.earlier_stages:
        typer.echo(f"  continued from {init_from}, trained before for "
                   f"{sum(s.steps for s in report.earlier_stages)} steps: "
                   + ", ".join(f"{s.name} {s.steps}" for s in report.earlier_stages))
    for stage in report.stages:
        typer.echo(f"  {stage.name:<9} {stage.steps} steps in {stage.seconds:.0f}s, loss "
                   f"{stage.first_loss:.3f} -> {stage.last_loss:.3f}")
    typer.echo(f"-> {report.out_dir}")


@eval_app.command("vqa")
@fail_cleanly
def eval_vqa(
    questions: Path = typer.Option(..., "--questions", help="Held-out image/question/answer/kind"),
    projector: Path = typer.Option(..., "--projector", help="Projector checkpoint"),
    train_questions: Path | None = typer.Option(None, "--train-questions", help="For the "
                                                   "per-question majority-answer prior"),
    per_kind: int = typer.Option(100, "--per-kind", min=0, help="Questions per kind (0: all)"),
    modes: str | None = typer.Option(None, "--modes", help="full,text,random; with several "
                                     "images per question joint,each [default: all]"),
    images_per_question: int = typer.Option(1, "--images-per-question", min=1, help="Show "
                                            "each question's image among distractors that "
                                            "lack what it names"),
    pairs: Path | None = typer.Option(None, "--pairs", help="The images' objects, for "
                                      "distractors [default: pairs.parquet beside "
                                      "--questions]"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 (autocast) | fp32"),
    threads: int | None = typer.Option(None, "--threads", min=1),
    llm: str | None = LlmOption,
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the table as bars "
                                        "into this PNG file"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """VQA exact match per question kind: full model vs text only vs random image tokens."""
    from mmindex.eval.vqa import VqaConfig, format_vqa, plot_vqa, run_vqa

    if threads:
        import torch

        torch.set_num_threads(threads)
    report = run_vqa(VqaConfig(questions=questions, checkpoint=projector, llm=llm,
                               train_questions=train_questions, per_kind=per_kind or None,
                               modes=_names(modes), batch_size=batch_size,
                               precision=precision, device=device,
                               images_per_question=images_per_question, pairs=pairs))
    if plot:
        plot_vqa(report, plot)
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(format_vqa(report), nl=False)


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (None when not given)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else None
