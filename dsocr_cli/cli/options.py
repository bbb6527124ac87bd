"""The model and generation options, declared once: a command stacks the ones it takes.

`@model_options("model", "device", ...)` adds those options to the command's signature (so
Typer shows them in its --help, after the command's own) and hands the command one
`ModelChoice` as its `choice` argument instead; options it does not take keep their defaults.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from typing import Callable

import typer

from .. import timing
from .common import (DEFAULTS, DeviceOpt, DtypeOpt, MaxTokensOpt, ModelOpt, ModeName, ModeOpt, NgramOpt,
                     NgramWindowOpt, ServerOpt, VerboseOpt, warn)

OPTIONS = {"mode": ModeOpt, "model": ModelOpt, "device": DeviceOpt, "dtype": DtypeOpt,
           "max_new_tokens": MaxTokensOpt, "ngram_size": NgramOpt, "ngram_window": NgramWindowOpt,
           "server": ServerOpt, "verbose": VerboseOpt}
LOADING = ("model", "device", "dtype")                       # which checkpoint, where
GENERATION = ("max_new_tokens", "ngram_size", "ngram_window")  # the token limit and the repetition guard
READING = ("mode", *LOADING, "max_new_tokens", "server", "verbose")  # the per-image commands
GUARDED = ("mode", *LOADING, *GENERATION, "server", "verbose")       # convert, ocr


@dataclass(frozen=True)
class ModelChoice:
    """Which model reads the pages, and how."""
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    mode: ModeName = ModeName.gundam
    max_new_tokens: int = DEFAULTS.max_new_tokens
    ngram_size: int = DEFAULTS.ngram_size
    ngram_window: int = DEFAULTS.ngram_window
    server: str | None = None  # a `dsocr serve` URL: the pages run there instead of on a model loaded here
    verbose: bool = False    # -v: the call's time split on stderr (convert: also a line per document)
    logprobs: bool = False   # not an option here: `ocr --json --logprobs` sets it

    @property
    def settings(self) -> dict:
        """The generation settings this choice overrides (load_runner's keywords)."""
        return dict(max_new_tokens=self.max_new_tokens, ngram_size=self.ngram_size, ngram_window=self.ngram_window)


DEFAULT_CHOICE = {f.name: f.default for f in fields(ModelChoice)}


def model_options(*names: str, **defaults) -> Callable[[Callable], Callable]:
    """Add the options `names` (keys of OPTIONS) to a command taking `choice: ModelChoice`;
    `defaults` overrides an option's default for this command (e.g. mode=ModeName.base)."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**kwargs):
            choice = ModelChoice(**{name: kwargs.pop(name) for name in names})
            with TimeSplit(choice.verbose):
                return command(choice=choice, **kwargs)

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "choice"]
        added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=OPTIONS[name],
                                   default=defaults.get(name, DEFAULT_CHOICE[name])) for name in names]
        run.__signature__ = inspect.Signature(own + added)
        run.__annotations__ = {**{k: v for k, v in command.__annotations__.items() if k != "choice"},
                               **{name: OPTIONS[name] for name in names}}
        return run
    return decorate


class TimeSplit:
    """Around one command: a fresh call clock, and with -v its split (import, load, setup, work) on
    stderr when the command ends, also when some inputs failed (exit 1); not after a usage error."""

    def __init__(self, shown: bool):
        self.shown = shown

    def __enter__(self) -> "TimeSplit":
        self.clock = timing.begin_call()
        return self

    def __exit__(self, kind, exc, trace) -> None:
        if self.shown and (kind is None or issubclass(kind, typer.Exit)):
            warn(timing.split_line(self.clock.split()))
