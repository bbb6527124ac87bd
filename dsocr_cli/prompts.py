"""Prompts: the files in prompts/, and a prompt turned into the model's input ids.

The official code renders a one-turn conversation with the "plain" template, which amounts to
the prompt text stripped of surrounding whitespace; `<image>` is replaced in place by the run of
image placeholder ids, one BOS goes first and no EOS is added.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import DsocrError
from .tokenizer import Tokenizer

# The shipped prompts (prompts/NAME.txt), by use.
DOCUMENT = "document"          # convert: Markdown with layout blocks and boxes
FREE_OCR = "free-ocr"          # text alone (convert --no-layout, ocr, eval, compress)
OCR_LAYOUT = "ocr-layout"      # ocr --layout
PARSE_FIGURE = "parse-figure"  # a figure read again: charts, chemistry (parse-chart, parse-chem, --parse-figures)
DESCRIBE = "describe"
LOCATE = "locate"

IMAGE_TAG = "<image>"
IMAGE_TOKEN_ID = 128815
BOS_ID = 0


class PromptError(DsocrError):
    pass


def _prompt_dir():
    """prompts/ is installed as dsocr_cli.prompt_files; a source tree run without install reads it directly."""
    try:
        return files("dsocr_cli.prompt_files")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "prompts"


def prompt_names() -> list[str]:
    return sorted(p.name[:-4] for p in _prompt_dir().iterdir() if p.name.endswith(".txt"))


def load_prompt(name: str) -> str:
    """The text of prompts/<name>.txt."""
    path = _prompt_dir() / f"{name}.txt"
    if not path.is_file():
        raise PromptError(f"no prompt named {name!r} (known: {', '.join(prompt_names())})")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class PromptIds:
    ids: list[int]
    image_mask: list[bool]  # True at the image placeholder positions

    @property
    def image_tokens(self) -> int:
        return sum(self.image_mask)


def build_prompt_ids(tokenizer: Tokenizer, prompt: str, image_tokens: int) -> PromptIds:
    """BOS + prompt with `<image>` expanded to `image_tokens` placeholders (prepended if absent)."""
    text = prompt.strip()
    count = text.count(IMAGE_TAG)
    if count > 1:
        raise PromptError("the prompt may contain <image> only once (one image per request)")
    if count == 0:
        text = f"{IMAGE_TAG}\n{text}"
    before, after = text.split(IMAGE_TAG)
    head, tail = tokenizer.encode(before), tokenizer.encode(after)
    ids = [BOS_ID] + head + [IMAGE_TOKEN_ID] * image_tokens + tail
    mask = [False] * (1 + len(head)) + [True] * image_tokens + [False] * len(tail)
    return PromptIds(ids, mask)
