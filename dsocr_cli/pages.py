"""One page of model output, parsed once: what every renderer, writer and pass reads.

A result becomes a `ParsedPage` as it comes in (or as saved output is read back): its raw text,
its blocks, its size, why the model stopped, its layout flags, and its figures with their crop
boxes and names. Markdown, the layout JSON, the annotation, the figure pass and the manifest all
read this object; none parses the text again. Pure: no files, no terminal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from PIL import Image

from .grounding import Block, Box, parse_blocks, to_pixels
from .requests import OcrResult

UNFINISHED = ("length", "repetition")
_TAGS = re.compile(r"<[^<>]*>")


@dataclass(frozen=True)
class PageFigure:
    name: str                # p{page}_fig{k}.png, k from 1 in reading order
    box: Box                 # on the model's 0..999 grid
    block: int               # index of its image block in the page's blocks
    caption: str             # plain text of the image_caption that follows, or ""


@dataclass
class ParsedPage:
    number: int
    raw: str = ""
    finish_reason: str = "error"             # eos | length | repetition | error
    size: tuple[int, int] | None = None      # page pixels; None when unknown (raw text read alone)
    error: str | None = None                 # the page could not be read or run at all
    retried: bool = False                    # run again with a stronger repetition guard
    blocks: list[Block] = field(init=False)
    figures: list[PageFigure] = field(init=False)

    def __post_init__(self):
        self.blocks = parse_blocks(self.raw)
        self.figures = _figures(self.blocks, self.number)

    @property
    def flags(self) -> list[str]:
        """The layout JSON's flags (layout.py documents them)."""
        if self.error is not None:
            return ["failed"]
        flags = [name for name, on in (("incomplete", self.finish_reason != "eos"),
                                       ("ungrounded", bool(self.raw.strip()) and "<|ref|>" not in self.raw),
                                       ("malformed", any(b.problems for b in self.blocks))) if on]
        return flags + ["retried"] if self.retried else flags

    @property
    def needs_image(self) -> bool:
        """Whether figures are cropped from the page image."""
        return bool(self.figures)


def page_of(result: OcrResult, number: int, retried: bool = False) -> ParsedPage:
    if result.error is not None:
        return ParsedPage(number, error=result.error, size=result.page_size, retried=retried)
    return ParsedPage(number, result.text, result.finish_reason, result.page_size, retried=retried)


def crop_figures(page: ParsedPage, image: Image.Image) -> dict[str, Image.Image]:
    """Each figure cut from the page image (at least one pixel, inside the page), by name."""
    crops = {}
    for figure in page.figures:
        x1, y1, x2, y2 = to_pixels(figure.box, *image.size)
        x1, y1 = min(x1, image.width - 1), min(y1, image.height - 1)
        crops[figure.name] = image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
    return crops


def plain_text(text: str) -> str:
    """Text without its tags, on one line (captions, alt text)."""
    return " ".join(_TAGS.sub(" ", text).split())


def _figures(blocks: list[Block], number: int) -> list[PageFigure]:
    figures = []
    for i, block in enumerate(blocks):
        if block.label != "image":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        caption = plain_text(following.text) if following and following.label == "image_caption" else ""
        for box in block.boxes:
            figures.append(PageFigure(f"p{number}_fig{len(figures) + 1}.png", box, i, caption))
    return figures
