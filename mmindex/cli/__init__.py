"""The command line: parse flags -> a config -> one library call -> print.

`app` is the typer application; each topic module registers its commands on it when
imported here."""

from mmindex.cli import ask_commands, index_commands, train_commands  # noqa: F401  (registers)
from mmindex.cli.app import app

__all__ = ["app"]
