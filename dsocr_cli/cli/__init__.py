"""The `dsocr` command line: one module per command, registered here."""
from __future__ import annotations

import re
import sys
import warnings

import typer

from ..errors import DsocrError
from . import bench, compress, convert, describe, info, locate, ocr, parse_chart, parse_chem
from .batch import OUTPUT_HELP
from .eval import eval_

RAY_ADDRESS = re.compile(r"auto|local|ray://\S+|[\w.-]+:\d+")

app = typer.Typer(help="DeepSeek-OCR on your own GPU: documents in, clean structured output out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.command("convert")(convert.convert)
app.command("ocr", epilog=OUTPUT_HELP)(ocr.ocr)
app.command("parse-chart", epilog=OUTPUT_HELP)(parse_chart.parse_chart)
app.command("parse-chem", epilog=OUTPUT_HELP)(parse_chem.parse_chem)
app.command("describe", epilog=OUTPUT_HELP)(describe.describe)
app.command("locate", epilog=OUTPUT_HELP)(locate.locate)
app.command("info")(info.info)
app.command("compress")(compress.compress)
app.command("eval")(eval_)
app.command("bench")(bench.bench)


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
