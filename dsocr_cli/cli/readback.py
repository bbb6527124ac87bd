"""What `compress` and `eval` share: reading text files, the tokenizer that counts, reading pages
back with the model (free OCR), and scoring each page: tokens, compression ratio, precision and
edit distance."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

from .. import checkpoint, prompts
from ..errors import DsocrError
from ..grounding import strip_grounding
from ..metrics import compression_ratio, mean, normalised_edit_distance, precision
from ..prompts import load_prompt
from ..requests import OcrRequest, OcrResult, Runner
from ..tokenizer import Tokenizer
from .common import stderr


def read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DsocrError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise DsocrError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise DsocrError(f"cannot read {path}: {exc.strerror}") from None


def counting_tokenizer(model: str | None) -> Tokenizer:
    """The tokenizer of the model --model (or $DSOCR_MODEL) names; for the released model, the copy
    shipped with dsocr, so counting needs no download."""
    if checkpoint.model_name(model) == checkpoint.DEFAULT_MODEL:
        return Tokenizer.bundled()
    return checkpoint.load_tokenizer(checkpoint.resolve(model))


def free_ocr_prompt() -> str:
    return load_prompt(prompts.FREE_OCR)


def read_back(runner: Runner, requests: Iterable[OcrRequest], total: int) -> dict[object, OcrResult]:
    """Run the requests, results by key; progress on stderr when it is a terminal."""
    results = {}
    for done, result in enumerate(runner.run(requests), start=1):
        results[result.key] = result
        if sys.stderr.isatty():
            stderr.print(f"dsocr: read back {done}/{total} ({result.finish_reason})", markup=False)
    return results


def page_numbers(tokenizer: Tokenizer, truth: str, vision_tokens: int) -> dict:
    text_tokens = len(tokenizer.encode(truth))
    return {"text_tokens": text_tokens, "vision_tokens": vision_tokens,
            "ratio": compression_ratio(text_tokens, vision_tokens)}


def page_scores(raw_output: str, truth: str) -> dict:
    """Scores of one read-back against its ground truth; grounding tags are not text."""
    text = strip_grounding(raw_output)
    return {"precision": precision(text, truth), "edit_distance": normalised_edit_distance(text, truth)}


def totals(items: list[dict]) -> dict:
    """Token sums and their ratio; the scores (when present) averaged over the scored pages."""
    text_tokens = sum(i["text_tokens"] for i in items)
    vision_tokens = sum(i["vision_tokens"] for i in items)
    out = {"text_tokens": text_tokens, "vision_tokens": vision_tokens,
           "ratio": compression_ratio(text_tokens, vision_tokens) if vision_tokens else None}
    for score in ("precision", "edit_distance"):
        if items and score in items[0]:
            out[score] = mean(i[score] for i in items)
    return out


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def fmt_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fmt_distance(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
