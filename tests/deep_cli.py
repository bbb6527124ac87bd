"""Running `dsocr` in this process (no interpreter start-up per call), for the deep parsing tests."""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsocr_cli.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEEP = ROOT / "fixtures" / "deep"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def dsocr(capsys, monkeypatch):
    """dsocr(*args, stdin=None) -> Outcome, as the real command line would exit and print."""
    def run(*args, stdin: str | None = None) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["dsocr", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return Outcome(code, out, err)
    return run
