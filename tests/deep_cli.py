"""Paths the deep parsing tests share."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEEP = ROOT / "fixtures" / "deep"
