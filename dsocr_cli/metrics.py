"""OCR output scored against ground truth the way the paper's two benchmarks score it.

Normalised edit distance (OmniDocBench, text): both texts are first reduced to word characters
(letters and digits of any script, underscore) and CJK ideographs, so whitespace, punctuation and
Markdown markup do not count; before that OmniDocBench deletes the two-character sequences `\\n`,
`\\t`, `/n`, `/t`, and so do we. (It also turns inline LaTeX into Unicode with pylatexenc first;
dsocr does not, so `$\\alpha$` scores as "alpha", not as the Greek letter.) The score is the
Levenshtein distance / the longer reduced length: 0 is a perfect read, 1 nothing in common. A page
whose texts both reduce to nothing is not scored (None), as OmniDocBench skips it.

Precision (the Fox benchmark's eval_ocr_test.py): words are whitespace-separated runs (for text
with Chinese characters, each CJK character is a word: Fox segments with jieba, which dsocr does not
ship), compared as sets. The tool hands NLTK's precision(reference, test) the model output as
reference and the ground truth as test, so its "precision" is |truth words & output words| /
|truth words|: the share of distinct ground-truth words that the output contains. None when the
ground truth has no words.

Benchmark totals average the per-page scores; `mean` skips unscored pages.
"""
from __future__ import annotations

import re

FOX_CHINESE = re.compile(r"[\u4e00-\u9fa5]")              # Fox's test for "this text is Chinese"
_CJK_WORDS = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\s\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
DROPPED = ("\\t", "\\n", "\t", "\n", "/t", "/n")        # removed in this order, as OmniDocBench does
_NOT_WORD = re.compile(r"[^\w\u4e00-\u9fff]")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with unit costs, one vectorised row per character of the shorter text.

    Within a row, insertions chain left to right: row[j] = min over k <= j of (t[k] + j - k), a
    running minimum of t[k] - k, so a row costs a few array operations instead of a Python loop.
    """
    if len(a) > len(b):
        a, b = b, a
    if not a:
        return len(b)
    import numpy as np  # here, not at the top: `dsocr eval --help` starts without it

    codes = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    row = cols.copy()
    for i, char in enumerate(a, start=1):
        t = np.empty_like(row)
        t[0] = i
        t[1:] = np.minimum(row[1:] + 1, row[:-1] + (codes != ord(char)))
        row = np.minimum.accumulate(t - cols) + cols
    return int(row[-1])


def normalise_text(text: str) -> str:
    """OmniDocBench's text normalisation: only word characters and CJK ideographs are kept."""
    for sequence in DROPPED:
        text = text.replace(sequence, "")
    return _NOT_WORD.sub("", text)


def normalised_edit_distance(output: str, truth: str) -> float | None:
    a, b = normalise_text(output), normalise_text(truth)
    if not a and not b:
        return None
    return edit_distance(a, b) / max(len(a), len(b))


def words(text: str, chinese: bool) -> set[str]:
    return set(_CJK_WORDS.findall(text) if chinese else text.split())


def precision(output: str, truth: str) -> float | None:
    """Share of the distinct ground-truth words found in the output (Fox's "precision")."""
    chinese = bool(FOX_CHINESE.search(truth) or FOX_CHINESE.search(output))
    truth_words = words(truth, chinese)
    if not truth_words:
        return None
    return len(truth_words & words(output, chinese)) / len(truth_words)


def compression_ratio(text_tokens: int, vision_tokens: int) -> float:
    """Text tokens carried per vision token (the paper's "compression")."""
    return text_tokens / vision_tokens


def mean(values) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None
