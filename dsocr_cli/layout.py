"""The layout JSON: what the model found on each page, in reading order, with its boxes.

Schema, version 1 (keys always present):

    {"version": 1,
     "source": "report.pdf",
     "meta": {...},                          # what the caller adds: model, mode, prompt, dpi, ...
     "pages": [{
        "page": 1,                           # page number in the source, from 1
        "size": [width, height],             # page pixels, the frame of every boxes_px (null only
                                             #   for a failed page that could not be read)
        "finish_reason": "eos",              # eos | length | repetition | error (not run at all)
        "flags": [],                         # any of: incomplete (not eos), ungrounded (no layout
                                             #   tags: free OCR), malformed (unreadable tags or boxes),
                                             #   retried (run again with a stronger repetition guard),
                                             #   failed (could not be read or run: problems says why)
        "problems": ["page 1, block 3 (table): ..."],
        "raw": "<|ref|>title<|/ref|>...",    # the model's output as generated
        "blocks": [{                         # in the model's (reading) order
            "label": "title",                # text, title, sub_title, image, table, equation, ...
            "text": "# Report",              # the block's content, tags removed
            "boxes": [[x1, y1, x2, y2]],     # on the model's 0..999 grid, several allowed
            "boxes_px": [[x1, y1, x2, y2]],  # the same in page pixels
        }]}]}

`raw` makes the file self-sufficient: `--from-raw` renders the Markdown again from it alone.
"""
from __future__ import annotations

from .errors import DsocrError
from .grounding import to_pixels
from .pages import ParsedPage

VERSION = 1
MAX_PAGE = 1_000_000            # page numbers and sides a layout file may give (a real one is far below)
MAX_SIDE = 1_000_000


def page_layout(page: ParsedPage, problems: list[str] = ()) -> dict:
    """A page's entry; a failed page stays in its place, empty, with its reason."""
    if page.error is not None:
        return {"page": page.number, "size": list(page.size) if page.size else None, "finish_reason": "error",
                "flags": page.flags, "problems": [page.error], "raw": "", "blocks": []}
    width, height = page.size
    return {"page": page.number, "size": [width, height], "finish_reason": page.finish_reason, "flags": page.flags,
            "problems": list(problems), "raw": page.raw,
            "blocks": [{"label": b.label, "text": b.text, "boxes": [list(box) for box in b.boxes],
                        "boxes_px": [list(to_pixels(box, width, height)) for box in b.boxes]}
                       for b in page.blocks]}


def document_layout(source: str, pages: list[dict], **meta) -> dict:
    return {"version": VERSION, "source": source, "meta": meta, "pages": pages}


def _whole(value) -> bool:
    """A positive int as JSON gives it (true and false are ints to Python, not here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def raw_pages_from_layout(doc: dict) -> list[tuple[int, str, str, tuple[int, int] | None, str | None]]:
    """(page_number, raw, finish_reason, size, error) per page of a layout document, checked.

    A failed page (finish_reason "error") may lack a size; its error is its first problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("pages"), list) or "version" not in doc:
        raise DsocrError("not a dsocr layout file (expected an object with 'version' and 'pages')")
    if not isinstance(doc["version"], int) or not 1 <= doc["version"] <= VERSION:
        raise DsocrError(f"layout file version {doc['version']!r} is not one this dsocr reads (1..{VERSION})")
    pages = []
    for n, page in enumerate(doc["pages"], 1):
        try:
            number, raw, reason = page["page"], page["raw"], page.get("finish_reason", "eos")
            size = page["size"]
            failed = reason == "error"
            if not (failed and size is None):
                width, height = size
                size = (width, height)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise DsocrError(f"layout file: page entry {n} lacks 'page', 'raw' or a [width, height] 'size'") from None
        if not (_whole(number) and isinstance(raw, str) and isinstance(reason, str)
                and (size is None or all(_whole(v) for v in size))):
            raise DsocrError(f"layout file: page entry {n} has a wrong type in 'page', 'raw', 'finish_reason' or 'size'")
        if not (1 <= number <= MAX_PAGE and (size is None or max(size) <= MAX_SIDE)):
            raise DsocrError(f"layout file: page entry {n} has page {number} or size {list(size or [])} out of range")
        problems = page.get("problems")
        problem = problems[0] if isinstance(problems, list) and problems else "failed"
        pages.append((number, raw, reason, size, str(problem) if failed else None))
    return pages
