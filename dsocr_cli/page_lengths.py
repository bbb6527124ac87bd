"""Output lengths for benchmarks: fixed, drawn from real DeepSeek-OCR pages, or from a file.

`dsocr bench --lengths real` draws each page's length from the bundled measurement
(assets/page_lengths.json: real page outputs tokenized with the checkpoint tokenizer, plus the share
of pages that loop until the guard stops them); `--lengths FILE` from a text file of token counts,
one per line. Draws depend only on the page's key, so every run of a benchmark sees the same pages.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import DsocrError
from .generate import EOS, REPETITION


@dataclass(frozen=True)
class LengthDistribution:
    tokens: tuple[int, ...]      # observed page lengths
    jitter: float = 0.0          # each draw scaled by a uniform factor in [1 - jitter, 1 + jitter]
    loop_fraction: float = 0.0   # share of pages that loop until the guard
    loop_extra: int = 0          # tokens a looping page runs past its normal length

    def draw(self, key: object, attempt: int = 0) -> tuple[int, str]:
        """(tokens, finish reason) for the page with this key, on this attempt (a retry draws anew)."""
        rng = random.Random(f"{key!r}/{attempt}")
        tokens = rng.choice(self.tokens) * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if rng.random() < self.loop_fraction:
            return max(1, round(tokens)) + self.loop_extra, REPETITION
        return max(1, round(tokens)), EOS

    @property
    def longest(self) -> int:
        return round(max(self.tokens) * (1 + self.jitter)) + self.loop_extra


def real_lengths() -> LengthDistribution:
    data = json.loads(files("dsocr_cli.assets").joinpath("page_lengths.json").read_text())
    return LengthDistribution(tuple(p["tokens"] for p in data["pages"]), data["jitter"], data["loop_fraction"],
                              data["loop_extra_tokens"])


def load_lengths(spec: str) -> LengthDistribution:
    """--lengths: 'real' or a file of token counts, one per line (blank lines and # comments skipped)."""
    if spec == "real":
        return real_lengths()
    path = Path(spec)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DsocrError(f"--lengths {spec}: cannot read it ({exc.strerror or exc})") from None
    counts = []
    for number, line in enumerate(lines, 1):
        text = line.split("#")[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise DsocrError(f"--lengths {spec}: line {number} is not a positive token count: {line.strip()!r}")
        counts.append(int(text))
    if not counts:
        raise DsocrError(f"--lengths {spec}: no token counts in it (one positive integer per line)")
    return LengthDistribution(tuple(counts))
