"""The render stage: every page of a document as Markdown, figure crops and drawings, in memory.

A page's image is rendered (from the input document) only when something needs it: figures to
crop that the figure pass has not cut already, or the annotation to draw; it is dropped as soon
as the page is done, so long documents keep memory flat.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from PIL import Image

from ..annotate import annotate_page
from ..documents import PageError
from ..errors import DsocrError
from ..figures import FigureReading, figure_markdown
from ..jobs import ConvertOptions, DocumentReport, Job
from ..markdown import RenderedPage, render_parsed
from ..pages import ParsedPage, crop_figures

GRID_PAGE = (1000, 1000)  # stands in for the page size when raw text is rendered alone


@dataclass
class RenderedDocument:
    job: Job
    options: ConvertOptions
    report: DocumentReport
    pages: list[ParsedPage]
    markdown: list[str] = field(default_factory=list)                    # per page, in order
    rendered: dict[int, RenderedPage] = field(default_factory=dict)      # by number, pages read
    problems: dict[int, list[str]] = field(default_factory=dict)         # by number, for the layout JSON
    readings: dict[int, dict[str, FigureReading]] = field(default_factory=dict)
    drawings: list[tuple[int, Image.Image]] = field(default_factory=list)  # --annotate: (number, drawing)


def render_document(job: Job, pages: list[ParsedPage], options: ConvertOptions, report: DocumentReport,
                    readings: dict[int, dict[str, FigureReading]], crops: dict[int, dict]) -> RenderedDocument:
    doc = RenderedDocument(job, options, report, pages, readings=readings)
    render = replace(options.render, figure_dir=job.target.figure_link)
    for page in pages:
        if page.error is not None:
            report.failed.append(f"page {page.number}: {page.error}")
            doc.markdown.append(f"<!-- dsocr: page {page.number} could not be converted: {_comment(page.error)} -->")
            continue
        wanted = (options.annotate or (options.layout_json and page.size is None)  # the size, from the page
                  or (page.needs_image and page.number not in crops))
        image = page_image(job, page, report) if wanted else None
        page.size = page.size or (image.size if image is not None else None)
        if page.size is None and (options.layout_json or options.annotate):
            raise DsocrError(f"page {page.number}: the page size is unknown (give the input document too)")
        cut = crops.get(page.number) or (crop_figures(page, image) if image is not None else {})
        notes = {name: figure_markdown(reading) for name, reading in readings.get(page.number, {}).items()}
        # Without a size (raw text rendered alone) figures are not cropped, so their boxes never
        # reach pixels: the model's grid stands in.
        rendered = render_parsed(page, page.size or GRID_PAGE, cut, render, notes)
        problems = rendered.problems + [f"page {page.number}, {name}: structure not verified: {reading.smiles_error}"
                                        for name, reading in readings.get(page.number, {}).items()
                                        if reading.smiles_error]
        report.problems += problems
        if page.finish_reason != "eos":
            report.incomplete.append(page.number)
        doc.markdown.append(rendered.markdown)
        doc.rendered[page.number], doc.problems[page.number] = rendered, problems
        if options.annotate and image is not None:
            doc.drawings.append((page.number, annotate_page(image, page.blocks)))
    return doc


def page_image(job: Job, page: ParsedPage, report: DocumentReport) -> Image.Image | None:
    """The page again, at full resolution, from the input document (None without one)."""
    if job.document is None:
        return None
    try:
        return job.document.page_ref(page.number)()
    except PageError as exc:
        report.problems.append(f"page {page.number}: cannot render it again for figures: {exc}")
        return None


def _comment(text: str) -> str:
    """Text safe inside an HTML comment, on one line."""
    return " ".join(text.replace("--", "- -").split())
