"""The `dsocr` command line: one module per command, registered here."""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings
from typing import Annotated

import typer

from .. import __version__
from ..errors import DsocrError
from .lazy import Entry, LazyGroup

RAY_ADDRESS = re.compile(r"auto|local|ray://\S+|[\w.-]+:\d+")

BATCH_EPILOG = "batch:OUTPUT_HELP"
COMMANDS = {
    "convert": Entry("convert", "convert", "Convert documents to Markdown, with figures, tables and math; "
                                           "pages run in batches on the GPU."),
    "ocr": Entry("ocr", "ocr", "OCR images with a prompt (default: free OCR). One image's text streams to "
                               "stdout when it is a terminal.", BATCH_EPILOG),
    "parse-chart": Entry("parse_chart", "parse_chart", "Read a chart's data table: numbers parsed, units kept, "
                                                       "one column per series (prompt: parse-figure).", BATCH_EPILOG),
    "parse-chem": Entry("parse_chem", "parse_chem", "Read a chemical structure as canonical SMILES, checked by "
                                                    "RDKit (prompt: parse-figure).", BATCH_EPILOG),
    "describe": Entry("describe", "describe", "Describe each image in detail (prompt: describe); an empty "
                                              "caption fails (exit 1).", BATCH_EPILOG),
    "locate": Entry("locate", "locate", "Find TEXT in each image (prompt: locate, {text} replaced): JSON boxes on "
                                        "the model's 0-999 grid and in pixels. Malformed boxes are left out and "
                                        "out-of-range ones clamped, both noted; no box fails (exit 1).", BATCH_EPILOG),
    "info": Entry("info", "info", "Model sizes, parameter counts, vision tokens per mode and the device, "
                                  "without loading weights."),
    "compress": Entry("compress", "compress", "Render text to page images and count text tokens, vision tokens "
                                              "and the compression ratio."),
    "eval": Entry("eval", "eval_", "Score the model's free OCR of known pages, per mode: edit distance, "
                                   "precision, tokens, compression."),
    "bench": Entry("bench", "bench", "Throughput on synthetic pages (or real PDFs, --pdf): pages/s, tokens/s, "
                                     "first-token latency, vision and decode cost, memory."),
    "serve": Entry("serve", "serve", "Serve the model over HTTP: OpenAI chat completions, /v1/convert, and the "
                                     "commands' --server."),
}


class Commands(LazyGroup):
    table = COMMANDS


app = typer.Typer(cls=Commands, help="DeepSeek-OCR on your own GPU: documents in, clean structured output out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _print_version(asked: bool) -> None:
    if asked:
        print(f"dsocr {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=_print_version, help="Print the version and exit.")] = False) -> None:
    pass


def _warning_line(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"dsocr: warning: {message}\n")


def ray_address_given(argv: list[str]) -> list[str]:
    """Bare `--ray` means the local Ray, but a Typer option always takes a value: supply it, unless
    the next argument is an address (auto, local, ray://..., host:port) rather than an input."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--ray" and not (following and RAY_ADDRESS.fullmatch(following)):
            out.append("local")
    return out


def main() -> None:
    """Bare `dsocr` is a request for help (exit 0); Ctrl-C is `dsocr: interrupted`, exit 130 (Typer
    turns KeyboardInterrupt into a silent exit 130, found here by what caused it)."""
    warnings.showwarning = _warning_line
    try:
        app(args=ray_address_given(sys.argv[1:]) or ["--help"])
    except DsocrError as exc:
        sys.stderr.write(f"dsocr: error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if _caused_by_interrupt(exc):
            _interrupted()
        raise


def run() -> None:
    """The `dsocr` process: main(), then exit. Once torch is imported, the interpreter's own
    teardown (unloading its thousands of modules) takes 0.6-0.9 s after everything is written; so
    then the exit handlers run, the output is flushed and the process ends without the teardown."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    if "torch" not in sys.modules or not isinstance(code, int) or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, multiprocessing's joins: what a normal exit would run
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let the normal exit report it as Python does
        sys.exit(code)
    os._exit(code)


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _interrupted() -> None:
    sys.stderr.write("dsocr: interrupted\n")
    sys.exit(130)
