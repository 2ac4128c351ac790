"""What every Ray Job entry point here shares: run one mmindex command, as the CLI would, with
its JSON summary on stdout.

A job submitted with `ray job submit` runs with RAY_ADDRESS set, so the Ray work inside the
command (the ingest's encoder actors, finetune's workers) joins that cluster instead of
starting a local one. Arguments are the command's own (`mmindex COMMAND --help`); the CLI maps
them onto the same config dataclass, so a job and a terminal run cannot drift apart."""

from __future__ import annotations

import sys


def run(command: list[str], defaults: dict[str, list[str]] | None = None) -> None:
    """`mmindex COMMAND ARGS... --json`; `defaults` maps an option the arguments lack to the
    words that stand in for it (`{"--executor": ["--executor", "ray"]}`)."""
    from mmindex.cli import app

    args = sys.argv[1:]
    given = {a.split("=")[0] for a in args}
    extra = [word for option, words in (defaults or {}).items() if option not in given
             for word in words]
    app([*command, *args, *extra, "--json"], prog_name=sys.argv[0])
