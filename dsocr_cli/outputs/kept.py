"""The pages of an incomplete document that were read well, kept beside its Markdown
(.NAME.md.kept.json) so that `convert --retry-incomplete` runs only the flagged pages again and
rewrites the document from these and the new ones. A document that is complete has none."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..pages import ParsedPage
from ..writers import Target, write_atomic
from .document import RenderedDocument


def kept_path(target: Target) -> Path | None:
    return target.markdown.with_name(f".{target.markdown.name}.kept.json") if target.markdown is not None else None


def write_kept_pages(doc: RenderedDocument) -> None:
    path = kept_path(doc.job.target)
    if path is None:
        return
    if not (doc.report.incomplete or doc.report.failed):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    pages = [{"page": p.number, "raw": p.raw, "finish_reason": p.finish_reason, "retried": p.retried,
              "size": list(p.size) if p.size else None} for p in doc.pages if _good(p)]
    write_atomic(path, json.dumps({"pages": pages}, ensure_ascii=False) + "\n")


def read_kept_pages(target: Target, numbers: list[int]) -> dict[int, ParsedPage]:
    """The good pages kept for `target` among `numbers`; none when the file is missing or unreadable
    (every page is then run again)."""
    path = kept_path(target)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["pages"]
        pages = [ParsedPage(e["page"], e["raw"], e["finish_reason"], tuple(e["size"]) if e["size"] else None,
                            retried=bool(e["retried"])) for e in entries]
    except (OSError, AttributeError, ValueError, KeyError, TypeError):
        return {}
    wanted = set(numbers)
    return {p.number: p for p in pages if p.number in wanted and _good(p)}


def _good(page: ParsedPage) -> bool:
    return page.error is None and page.finish_reason == "eos"
