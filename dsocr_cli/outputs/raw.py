"""--keep-raw: each page's model output as TARGET_raw/page-0003.txt (page-0003.length.txt when unfinished)."""
from __future__ import annotations

import re
from pathlib import Path

from ..pages import UNFINISHED, ParsedPage
from ..writers import write_atomic
from .document import RenderedDocument


def raw_name(number: int, finish_reason: str) -> str:
    """page-0003.txt, or page-0003.length.txt for a page the model did not finish; a reason read
    from a layout file is data, so only letters, digits and _ of it reach the name."""
    reason = re.sub(r"[^A-Za-z0-9_]+", "_", finish_reason)[:40] or "unknown"
    return f"page-{number:04d}.txt" if reason == "eos" else f"page-{number:04d}.{reason}.txt"


def write_raw_pages(doc: RenderedDocument) -> None:
    if doc.options.keep_raw:
        for page in doc.pages:
            if page.error is None:
                _write_raw(doc.job.target.raw, page)


def _write_raw(folder: Path, page: ParsedPage) -> None:
    name = raw_name(page.number, page.finish_reason)
    write_atomic(folder / name, page.raw)
    for reason in ("eos", *UNFINISHED):  # an earlier run's file for this page would contradict it
        stale = folder / raw_name(page.number, reason)
        if stale.name != name:
            stale.unlink(missing_ok=True)
