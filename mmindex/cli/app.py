"""The command line's shared parts: the app, common options, error handling, output.

Imports of the heavy libraries happen inside the commands, so `mmindex --help` is instant.
Library errors (MmindexError) become one line on stderr and an exit code; nothing else
here decides anything."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
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


def fail_cleanly(command):
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


def resolve_index_dir(index: Path | None) -> Path:
    from mmindex.core.paths import default_index_dir

    return index or default_index_dir()


def config_option(config: type, field: str, *flags: str, **kwargs):
    """A typer option whose default is the config dataclass's own: each default is written
    once, in the library, and `--help` shows it."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    if defaults.get(field, dataclasses.MISSING) is dataclasses.MISSING:
        raise TypeError(f"{config.__name__}.{field} has no default to offer an option")
    return typer.Option(defaults[field], *flags, **kwargs)


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


class progress_reporter:
    """The library's Progress shown on stderr: a rich bar on a terminal, otherwise one plain
    line per stage at most every LINE_SECONDS (and when a stage ends), so a log or a CI job
    sees long work move. Silent with --json, whose stdout a program reads."""

    LINE_SECONDS = 10.0

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.tasks = {}
        self.last_line: dict[str, float] = {}

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
        return self

    def __call__(self, stage: str, done: int, total: int, /, **metrics: float) -> None:
        if not self.enabled:
            return
        label = " ".join([stage, *(f"{k} {v:.4g}" for k, v in metrics.items())])
        if self.bar is not None:
            task = self.tasks.setdefault(stage, self.bar.add_task(stage, total=total or None))
            self.bar.update(task, completed=done, total=total or None, description=label)
        elif self._line_due(stage, done, total):
            count = f"{done}/{total}" if total else str(done)
            typer.echo(f"{label}: {count}", err=True)

    def _line_due(self, stage: str, done: int, total: int) -> bool:
        now = time.monotonic()
        first = stage not in self.last_line
        if first or done == total or now - self.last_line[stage] >= self.LINE_SECONDS:
            self.last_line[stage] = now
            return True
        return False

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

eval_app = typer.Typer(no_args_is_help=True, help="Measure models on labelled data.")
app.add_typer(eval_app, name="eval")

llm_app = typer.Typer(no_args_is_help=True, help="The language model that answers `ask`.")
app.add_typer(llm_app, name="llm")
ProjectorOption = typer.Option(None, "--projector", envvar="MMINDEX_PROJECTOR", help="Projector "
                               "checkpoint [default: INDEX/projector]")
GeneratorOption = typer.Option(None, "--generator", envvar="MMINDEX_GENERATOR", help="What "
                               "answers: a projector checkpoint, a transformers vision-language "
                               "model (hub id or folder), or `llm` (the language model alone, "
                               "from the texts); `mmindex generators` lists them "
                               "[default: the index's projector]")
LlmOption = typer.Option(None, "--llm", help="HF causal-LM dir or .gguf [default: the one the "
                         "projector was trained with; for --generator llm, $MMINDEX_LLM or "
                         "the installed SmolLM2]")
