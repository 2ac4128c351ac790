"""Commands for the capability domains with exact answers: make-charts, make-scenes,
make-documents, eval code (image-to-code: the drawing programs a model writes, parsed and
scored), eval documents (retrieval) and eval document-questions (field questions)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmindex.cli.app import (
    DeviceOption,
    GeneratorOption,
    JsonOption,
    LlmOption,
    ProjectorOption,
    app,
    config_option,
    eval_app,
    fail_cleanly,
    print_json,
    progress_reporter,
)
from mmindex.errors import UserInputError
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


@eval_app.command("document-questions")
@fail_cleanly
def eval_document_questions(
    split: Path = typer.Option(..., "--split", help="A make-documents folder"),
    index: Path = typer.Option(..., "--index", help="An index of it (`ingest OUT/pdf`, or "
                               "`ingest OUT/images OUT/text`)"),
    generator_spec: str | None = GeneratorOption,
    projector: Path | None = ProjectorOption,
    llm: str | None = LlmOption,
    per_kind: int = typer.Option(0, "--per-kind", min=0, help="Questions sampled per kind "
                                 "(0: all)"),
    seed: int = typer.Option(0, "--seed", help="Sampling seed"),
    kinds: str = typer.Option("", "--kinds", help="Only these question kinds, comma-separated "
                              "(total, number, date...) [default: all]"),
    texts: int = typer.Option(2, "--texts", min=1, help="Passages ask retrieves"),
    k: int = typer.Option(1, "-k", "--k", min=1, help="Page images ask shows an answerer "
                          "that reads images"),
    passage_mode: str | None = typer.Option(None, "--passage-mode", help="How ask ranks "
                                            "passages: vector | lexical | hybrid [default: "
                                            "ask's]"),
    threshold: float | None = typer.Option(None, "--threshold", help="ask's abstain "
                                           "threshold [default: the index's calibrated one]"),
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", min=1),
    skip: str = typer.Option("", "--skip", help="Leave out: oracle (the page given) or ask "
                             "(retrieved)"),
    report_file: Path | None = typer.Option(None, "--report", help="Also write the JSON "
                                            "report, every reply included, to this file"),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Field questions ("What is the total?") answered through ask's code: from the page's
    own text layer (and its image, for a generator that reads images), and through `ask`
    over the index; exact match per kind and [T1]'s citation."""
    from mmindex.ask.config import AskConfig
    from mmindex.ask.field_questions import (
        FieldQuestionsConfig,
        format_field_questions,
        run_field_questions,
    )
    from mmindex.ask.generator import open_generator
    from mmindex.core.atomic import write_atomically

    left_out = {s.strip() for s in skip.split(",") if s.strip()}
    if left_out - {"oracle", "ask"} or left_out == {"oracle", "ask"}:
        raise UserInputError(f"--skip takes oracle or ask, not {skip!r}")
    generator = open_generator(index, projector, llm, device, generator_spec)
    config = FieldQuestionsConfig(
        split, per_kind=per_kind or None, seed=seed,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        oracle="oracle" not in left_out,
        ask="ask" not in left_out,
        ask_config=AskConfig(k=k, texts=texts, threshold=threshold, joint=True,
                             max_new_tokens=max_new_tokens, passage_mode=passage_mode))
    with progress_reporter(enabled=not as_json) as progress:
        report = run_field_questions(generator, config, progress)
    if report_file is not None:
        write_atomically(report_file, json.dumps(report.to_dict(), indent=2))
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(format_field_questions(report), nl=False)
