"""The `dsocr` process ends without the interpreter's teardown once torch is loaded, and still
runs exit handlers, flushes its output and keeps its exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


PAGE = str(Path(__file__).parent.parent / "fixtures" / "readme" / "page.png")
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as in a pipe: flushing matters


def _run(argv: list[str], torch_loaded: bool) -> subprocess.CompletedProcess:
    code = ("import atexit, sys; atexit.register(lambda: print('exit handler ran')); "
            + ("import torch; " if torch_loaded else "")
            + f"sys.argv = {['dsocr', *argv]!r}; from dsocr_cli.cli import run; run()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=BUFFERED)


@pytest.mark.parametrize("torch_loaded", [True, False])
def test_exit_handlers_run_and_output_is_flushed(torch_loaded):
    done = _run(["--version"], torch_loaded)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dsocr ") and done.stdout.rstrip().endswith("exit handler ran")


def test_an_error_keeps_its_exit_status_and_message(dsocr, tmp_path):
    missing = str(tmp_path / "missing.png")
    expected = dsocr("ocr", missing)
    done = _run(["ocr", missing], torch_loaded=True)
    assert expected.code != 0
    assert (done.returncode, done.stderr.splitlines()[0]) == (expected.code, expected.stderr.splitlines()[0])


def test_a_model_run_writes_all_its_output(tiny_checkpoint):
    done = subprocess.run([sys.executable, "-m", "dsocr_cli", "ocr", PAGE, "--model",
                           str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "4", "--json"],
                          capture_output=True, text=True, timeout=300, env=BUFFERED)
    assert done.returncode in (0, 1), done.stderr  # 1: the tiny model stops at the token limit
    assert json.loads(done.stdout)["finish_reason"] == "length"
