"""--json: TARGET_layout.json, every page with its size, raw output, flags and blocks (layout.py's schema)."""
from __future__ import annotations

import json

from ..layout import document_layout, page_layout
from ..writers import write_atomic
from .document import RenderedDocument


def write_layout(doc: RenderedDocument) -> None:
    if not doc.options.layout_json:
        return
    pages = [page_layout(page, doc.problems.get(page.number, ())) for page in doc.pages]
    layout = document_layout(str(doc.job.source.relative), pages, **doc.options.meta)
    write_atomic(doc.job.target.layout, json.dumps(layout, ensure_ascii=False, indent=1) + "\n")
