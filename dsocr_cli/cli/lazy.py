"""Commands listed from a table and imported only when one runs: `dsocr --help` and `dsocr
--version` import no command module (and so no torch, RDKit or PyMuPDF), `dsocr CMD ...` imports
that command's module alone."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer
from typer import _click as click
from typer.core import TyperCommand, TyperGroup


def bare_flags(params: list) -> list:
    """On/off options shown as flags: no `<bool>` after them in --help."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: click.Context) -> list:
        return bare_flags(super().get_params(ctx))


@dataclass(frozen=True)
class Entry:
    """Where a command lives, and its one-line help (the first paragraph of its docstring, which
    tests/test_start.py checks) for the listing in `dsocr --help`."""
    module: str      # below dsocr_cli.cli
    function: str
    summary: str
    epilog: str | None = None  # "module:NAME" of a text shown after the command's options

    def load(self, name: str) -> click.Command:
        function = getattr(importlib.import_module(f"dsocr_cli.cli.{self.module}"), self.function)
        epilog = None
        if self.epilog:
            module, _, attribute = self.epilog.partition(":")
            epilog = getattr(importlib.import_module(f"dsocr_cli.cli.{module}"), attribute)
        single = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
        single.command(name, cls=Command, epilog=epilog)(function)
        command = typer.main.get_command(single)
        command.name = name
        return command


class LazyGroup(TyperGroup):
    """A Typer group whose commands come from `table`: placeholders (name and summary) until one
    is resolved to run or to show its own help."""
    table: dict[str, Entry] = {}

    def __init__(self, **attrs):
        super().__init__(**attrs)
        for name, entry in self.table.items():
            self.commands[name] = TyperCommand(name, help=entry.summary)
        self.loaded: set[str] = set()

    def get_params(self, ctx: click.Context) -> list:
        return bare_flags(super().get_params(ctx))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.table)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if name in self.table and name not in self.loaded:
            self.commands[name] = self.table[name].load(name)
            self.loaded.add(name)
        return name, self.commands.get(name, command), rest
