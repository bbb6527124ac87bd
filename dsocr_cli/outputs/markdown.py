"""The document's Markdown, written last: its file marks the document complete (or it goes to stdout)."""
from __future__ import annotations

from ..markdown import join_pages
from ..writers import write_atomic
from .document import RenderedDocument


def write_markdown(doc: RenderedDocument) -> None:
    text = join_pages(doc.markdown, doc.options.page_separator, [page.number for page in doc.pages])
    if doc.job.target.markdown is None:
        doc.report.markdown = text
    else:
        write_atomic(doc.job.target.markdown, text)
