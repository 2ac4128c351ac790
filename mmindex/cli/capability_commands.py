"""Commands for the capability domains with exact answers: make-charts, make-scenes and
eval code (image-to-code: the drawing programs a model writes, parsed and scored)."""

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
from mmindex.eval.code import CodeEvalConfig


def _print_split(summary, out: Path, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict

        print_json(asdict(summary))
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in summary.questions_by_kind.items())
    typer.echo(f"{summary.n_images} images, {summary.n_questions} questions ({kinds}), "
               f"{summary.n_programs} programs -> {out}")


@app.command("make-charts")
@fail_cleanly
def make_charts(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)"),
    n: int = typer.Option(2000, "--n", min=1, help="Number of charts"),
    seed: int = typer.Option(0, "--seed", help="Split seed: different seeds never share charts"),
    size: int = typer.Option(128, "--size", min=32, help="Image side in pixels"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JsonOption,
):
    """Write bar, line and pie charts with their data, captions, questions and programs."""
    from mmindex.data.charts import write_charts

    _print_split(write_charts(out, n, seed=seed, size=size, overwrite=overwrite), out, as_json)


@app.command("make-scenes")
@fail_cleanly
def make_scenes(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)"),
    n: int = typer.Option(3000, "--n", min=1, help="Number of scenes"),
    seed: int = typer.Option(0, "--seed", help="Split seed: different seeds never share scenes"),
    size: int = typer.Option(128, "--size", min=32, help="Image side in pixels"),
    background: str = typer.Option("mixed", "--background", help="plain | noisy | mixed"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JsonOption,
):
    """Write scenes of 2-5 shapes with spatial-relation questions (one kind per relation)."""
    from mmindex.data.scenes import write_scenes

    summary = write_scenes(out, n, seed=seed, size=size, background=background,
                           overwrite=overwrite)
    _print_split(summary, out, as_json)


@app.command("make-documents")
@fail_cleanly
def make_documents(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)"),
    count: int = typer.Option(200, "--count", min=1, help="Number of documents"),
    seed: int = typer.Option(0, "--seed", help="Split seed: the same seed writes the same "
                             "bytes"),
    dpi: int = typer.Option(100, "--dpi", min=36, max=300, help="Resolution of the page "
                            "images"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = JsonOption,
):
    """Write invoices, forms and statements as PDFs and page PNGs, with their fields,
    retrieval queries and field questions (docs/documents.md)."""
    from dataclasses import asdict

    from mmindex.data.documents import write_documents

    with progress_reporter(enabled=not as_json) as progress:
        summary = write_documents(out, count, seed=seed, dpi=dpi, overwrite=overwrite,
                                  progress=progress)
    if as_json:
        print_json(asdict(summary) | {"out_dir": str(summary.out_dir)})
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in summary.documents_by_kind.items())
    typer.echo(f"{summary.n_documents} documents ({kinds}), {summary.n_pages} pages, "
               f"{summary.n_queries} retrieval queries, {summary.n_questions} field "
               f"questions -> {out}")


@eval_app.command("code")
@fail_cleanly
def eval_code(
    questions: Path = typer.Option(..., "--questions", help="code.parquet of a make-scenes or "
                                   "make-charts split (the programs that drew the images)"),
    projector: Path | None = typer.Option(None, "--projector", help="Projector checkpoint "
                                          "that writes the programs"),
    predictions: Path | None = typer.Option(None, "--predictions", help="Or a table of "
                                            "programs already written (columns image, answer)"),
    limit: int = config_option(CodeEvalConfig, "limit", "--limit", min=0,
                               help="Programs scored (0: all)"),
    modes: str = typer.Option("full,text", "--modes", help="full (from the image), text "
                              "(the prompt alone)"),
    batch_size: int = config_option(CodeEvalConfig, "batch_size", "--batch-size", min=1),
    precision: str = config_option(CodeEvalConfig, "precision", "--precision",
                                   help="auto | bf16 | fp32"),
    threads: int | None = typer.Option(None, "--threads", min=1),
    llm: str | None = LlmOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Image-to-code: parse and render each written program, score it against the drawing."""
    from mmindex.eval.code import format_code, run_code_eval

    if threads:
        import torch

        torch.set_num_threads(threads)
    report = run_code_eval(CodeEvalConfig(
        questions=questions, checkpoint=projector, predictions=predictions, llm=llm,
        limit=limit or None, modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        batch_size=batch_size, precision=precision, device=device))
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(format_code(report), nl=False)


@eval_app.command("documents")
@fail_cleanly
def eval_documents(
    split: Path = typer.Option(..., "--split", help="A make-documents folder"),
    index: Path = typer.Option(..., "--index", help="An index of it: `ingest OUT/pdf` (PDF "
                               "pages and text layer), or `ingest OUT/images OUT/text`"),
    limit: int = typer.Option(0, "--limit", min=0, help="Queries used (0: all)"),
    as_json: bool = JsonOption,
):
    """Retrieval recall@1/5 of the split's queries by text layer, page image and both."""
    from mmindex.eval.documents import DocumentsEvalConfig, format_documents, run_documents_eval

    with progress_reporter(enabled=not as_json) as progress:
        report = run_documents_eval(DocumentsEvalConfig(split, index, limit=limit or None),
                                    progress)
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(format_documents(report), nl=False)
