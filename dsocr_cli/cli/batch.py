"""The terminal side of the per-image commands (ocr, parse-chart, parse-chem, describe, locate):
their shared options, a progress bar while the model runs, and `emit`, which writes the answers
the same way for every command (see OUTPUT_HELP). The pipeline itself is images.py."""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..errors import DsocrError
from ..images import Answer, ImageBatch, Reading, answer_to, json_line
from ..writers import write_atomic
from .common import mode_of, stderr, warn
from .options import ModelChoice

__all__ = ["Answer", "Batch", "Reading"]

OUTPUT_HELP = (
    "Inputs: image files, folders (searched recursively for images), - (paths on stdin, one per line). "
    "Output: one image, its data on stdout; several, --json writes JSON Lines (one object per image, its "
    "path in \"image\") and other formats put a line '==> IMAGE <==' before each image's data. "
    "-o FILE (one image) or -o DIR/ (one file per image, named after it; with several images a new name "
    "without a suffix, -o DIR, is a folder too). "
    "--from-raw FILE (one image) or DIR (IMAGE-NAME.txt per image) reads saved model output; "
    "without images it reads the file, or every .txt in DIR. "
    "Exit status: 0 all good, 1 some image failed (the others are still written), 2 usage error.")

ImagesArg = Annotated[Optional[list[str]], typer.Argument(
    help="Images (png jpg tiff webp bmp gif), folders, or - for paths on stdin.", show_default=False)]
OutputOpt = Annotated[Optional[str], typer.Option(
    "-o", "--output", help="FILE for one image, DIR/ for one file per image (several images: DIR without / too, "
                        "when it does not exist and has no suffix). Default: stdout.")]
FromRawOpt = Annotated[Optional[Path], typer.Option(
    "--from-raw", help="Saved raw model output instead of running the model: a text file (one image) or a "
                       "folder of IMAGE-NAME.txt files.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON (JSON Lines for several images).")]


class Batch(ImageBatch):
    """An ImageBatch run from the command line: the model chosen by options, a progress bar, answers written."""

    def read(self, prompt: str, choice: ModelChoice, on_text: Callable[[str], None] | None = None) -> None:
        with Progress(TextColumn("images"), BarColumn(), MofNCompleteColumn(), console=stderr,
                      disable=not stderr.is_terminal or on_text is not None or self.from_raw is not None,
                      transient=True) as progress:
            task = progress.add_task("images", total=sum(r.error is None for r in self.readings))
            mode = None if self.from_raw is not None else mode_of(choice.mode, choice.model)  # saved output: no model
            super().read(prompt, mode, partial(_open_runner, choice), on_text, lambda: progress.advance(task))

    def emit(self, answer_of: Callable[[Reading], Answer], as_json: bool) -> None:
        """Every reading's answer to stdout or its file, problems on stderr; exit 1 if any failed."""
        several = len(self.readings) > 1
        failed = False
        for reading, file in zip(self.readings, self.files):
            answer = answer_to(reading, answer_of)
            for note in answer.notes:
                warn(f"{reading.name}: {note}")
            if answer.error:
                failed = True
                warn(f"{reading.name}: {answer.error}")
            data = json_line(reading, answer) if as_json else answer.text
            if data is None:
                continue
            if file is not None:
                try:
                    write_atomic(file, data)
                except DsocrError as exc:  # this image's file alone: the others are still written
                    failed = True
                    warn(f"{reading.name}: {exc}")
            else:
                sys.stdout.write(f"==> {reading.name} <==\n{data}" if several and not as_json else data)
                sys.stdout.flush()
        if failed:
            raise typer.Exit(1)


def _open_runner(choice: ModelChoice, pages: int):
    from ..serve import runner_for

    return runner_for(choice.server, choice.model, choice.device, choice.dtype, logprobs=choice.logprobs, pages=pages,
                      **choice.settings)
