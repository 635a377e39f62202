"""The ``imaginebot`` command: one entry point, built from a table of the owners' command-line apps.

This is the composition root. :data:`COMMANDS` is the one place that names every package's ``cli``
module (as text: nothing is imported here); a command's module is imported only when that command
runs or its help is shown, so ``imaginebot web`` never imports torch, and each owner keeps its
commands beside its code:

- ``worker/``: ``up`` and ``status`` (the supervisor), ``worker``, ``eval-diffusion`` (the served model);
- ``bots/<platform>/cli.py``: ``web``, ``discord``, ``telegram``;
- ``bots/cli/``: the command line as a chat front-end: ``imagine``, ``show``, ``retrain``, ``models``;
- ``training/cli.py``: ``train``, ``eval``, ``preprocess``, ``train-damsm``, ``train-diffusion``,
  ``export-diffusion`` (one typer app).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

import click
import typer
from typer.core import TyperGroup

#: command name -> ``"module:app"``: the typer app (in a ``cli`` module) that holds the command.
COMMANDS: dict[str, str] = {
    "up": "worker.up_cli:app",
    "status": "worker.up_cli:app",
    "worker": "worker.worker_cli:app",
    "web": "bots.web.cli:app",
    "discord": "bots.discord.cli:app",
    "telegram": "bots.telegram.cli:app",
    "imagine": "bots.cli.imagine:app",
    "show": "bots.cli.show:app",
    "retrain": "bots.cli.retrain:app",
    "models": "bots.cli.models:app",
    "train": "training.cli:app",
    "eval": "training.cli:app",
    "preprocess": "training.cli:app",
    "train-damsm": "training.cli:app",
    "train-diffusion": "training.cli:app",
    "export-diffusion": "training.cli:app",
    "eval-diffusion": "worker.eval_cli:app",
}


def load_command(name: str, target: str) -> click.Command:
    """The command ``name`` of the typer app ``target`` (``"module:app"``), importing its module."""
    module, _, attribute = target.partition(":")
    command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
    if isinstance(command, TyperGroup):
        if name not in command.commands:
            raise RuntimeError(f"{target} has no command {name!r}")  # a wrong table entry, not user input
        return command.commands[name]
    return command  # an app of a single command is that command


class LazyCommands(Mapping[str, click.Command]):
    """The table's commands, each loaded the first time it is looked up."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = table
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            self.loaded[name] = load_command(name, self.table[name])
        return self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


class TableGroup(TyperGroup):
    """A typer group whose commands come from :data:`COMMANDS`, loaded on demand."""

    def __init__(self, **attrs: Any) -> None:
        attrs["commands"] = LazyCommands(COMMANDS)
        super().__init__(**attrs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The names, in the table's order (listing them imports nothing)."""
        return list(self.commands)


app = typer.Typer(
    cls=TableGroup,
    help="imaginebot: text-to-image chatbot with a Redis/Celery GPU job queue.",
    no_args_is_help=True,
)


@app.callback()
def imaginebot() -> None:
    """imaginebot: text-to-image chatbot with a Redis/Celery GPU job queue."""


def main() -> None:
    """Console-script entry point."""
    from core.log_redaction import install_redaction

    install_redaction()  # before anything can log: tokens never reach a log of any child process
    app()


if __name__ == "__main__":
    main()
