"""The command line: parse flags -> a config -> one library call -> print.

`app` is the typer application; each topic module registers its commands on it when
imported here."""

from mmindex.cli import (  # noqa: F401  (registers)
    ask_commands,
    capability_commands,
    index_commands,
    train_commands,
)
from mmindex.cli.app import app

__all__ = ["app"]
