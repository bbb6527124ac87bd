"""`dsocr convert --parse-figures`: the second pass. Every figure of the finished pages is cropped
and read again by the same runner with the parse-figure prompt, in one run so they batch."""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Iterator

from PIL import Image

from .figures import FigureReading, read_figure
from .markdown import render_page
from .preprocess import Mode
from .requests import GenerationSettings, OcrRequest, Runner

PageKey = tuple[Hashable, int]   # (whose page, page number)


def read_figures(pages: Iterable[tuple[PageKey, str, Image.Image | None]], runner: Runner,
                 settings: GenerationSettings | None, prompt: str, mode: Mode) -> dict[PageKey, dict[str, FigureReading]]:
    """Readings by page, then by figure name (p3_fig1.png). `pages` (key, raw output, page image or
    None) is consumed lazily, as the runner takes requests, so page images do not pile up."""
    def requests() -> Iterator[OcrRequest]:
        for key, raw, image in pages:
            if image is not None:
                for figure in render_page(raw, key[1], image.size, image).figures:
                    yield OcrRequest(figure.image, prompt, mode, key=(key, figure.name))

    readings: dict[PageKey, dict[str, FigureReading]] = defaultdict(dict)
    for result in runner.run(requests(), settings=settings):
        key, name = result.key
        if result.error is None:
            readings[key][name] = read_figure(result.text)
    return readings
