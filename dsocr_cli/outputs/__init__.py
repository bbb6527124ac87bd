"""A document's outputs: its pages rendered once, then one writer per artefact.

`write_document` renders every page (Markdown, figure crops, drawings) into a `RenderedDocument`,
then hands it to each writer in turn: figure crops, chart tables, raw pages, the layout JSON, the
annotation, and the Markdown last (a document's Markdown marks it complete). A new output is one
more writer. Any failure is the document's alone: its report says why and the batch goes on.
"""
from __future__ import annotations

from ..errors import DsocrError
from ..figures import FigureReading
from ..jobs import ConvertOptions, DocumentReport, Job
from ..pages import ParsedPage
from .annotation import write_annotation
from .charts import write_chart_tables
from .document import render_document
from .figures import write_figures
from .kept import write_kept_pages
from .layout import write_layout
from .markdown import write_markdown
from .raw import write_raw_pages

WRITERS = (write_figures, write_chart_tables, write_raw_pages, write_layout, write_annotation, write_kept_pages,
           write_markdown)


def write_document(job: Job, pages: list[ParsedPage], options: ConvertOptions,
                   figure_readings: dict[int, dict[str, FigureReading]] | None = None,
                   crops: dict[int, dict] | None = None) -> DocumentReport:
    """Render the pages and write the document's outputs; `crops` (by page) when the figure pass
    has cut them already, so the page need not be rendered again."""
    report = DocumentReport(job.source, job.target, pages=len(pages))
    try:
        document = render_document(job, pages, options, report, figure_readings or {}, crops or {})
        for write in WRITERS:
            write(document)
    except DsocrError as exc:
        report.error = str(exc)
    except Exception as exc:  # a bug met by one document must not cost the batch the others
        report.error = f"internal error ({type(exc).__name__}: {exc}); please report it"
    return report
