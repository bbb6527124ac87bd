"""`dsocr convert --parse-figures`: the second pass. Every figure of the finished pages is cropped
and read again by the same runner with the parse-figure prompt, in one run so they batch."""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Iterator

from PIL import Image

from .figures import FigureReading, read_figure
from .pages import ParsedPage, crop_figures
from .preprocess import Mode
from .requests import GenerationSettings, OcrRequest, Runner

PageKey = tuple[Hashable, int]   # (whose page, page number)


def read_figures(pages: Iterable[tuple[PageKey, ParsedPage, Image.Image | None]], runner: Runner,
                 settings: GenerationSettings | None, prompt: str, mode: Mode,
                 ) -> tuple[dict[PageKey, dict[str, FigureReading]], dict[PageKey, dict[str, Image.Image]]]:
    """Readings by page, then by figure name (p3_fig1.png), and the crops they were read from (the
    document's figure files: the page need not be rendered again). `pages` (key, page, its image or
    None) is consumed lazily, as the runner takes requests, so page images do not pile up."""
    crops: dict[PageKey, dict[str, Image.Image]] = {}

    def requests() -> Iterator[OcrRequest]:
        for key, page, image in pages:
            if image is not None:
                crops[key] = crop_figures(page, image)
                for name, crop in crops[key].items():
                    yield OcrRequest(crop, prompt, mode, key=(key, name))

    readings: dict[PageKey, dict[str, FigureReading]] = defaultdict(dict)
    for result in runner.run(requests(), settings=settings):
        key, name = result.key
        if result.error is None:
            readings[key][name] = read_figure(result.text)
    return readings, crops
