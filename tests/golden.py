"""Golden files: compare output with fixtures/golden/NAME; DSOCR_UPDATE_GOLDEN=1 rewrites them first."""
from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RAW = FIXTURES / "raw"
GOLDEN = FIXTURES / "golden"


def raw_fixture(name: str) -> str:
    return (RAW / f"{name}.txt").read_text(encoding="utf-8")


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DSOCR_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path} (run with DSOCR_UPDATE_GOLDEN=1 to write it, then review it)"
    assert text == path.read_text(encoding="utf-8"), f"output differs from {path}"
