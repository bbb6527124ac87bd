"""What one conversion is: its options, a job per input document, and the report on each."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .documents import DPI, Document, Source
from .markdown import RenderOptions
from .writers import Target

if TYPE_CHECKING:
    from .pages import ParsedPage
    from .preprocess import Mode


@dataclass(frozen=True)
class ConvertOptions:
    mode: Mode
    prompt: str
    dpi: int = DPI
    pages: str | None = None                 # --pages, e.g. "1-3,7,10-"
    render: RenderOptions = RenderOptions()  # figure links are set per document
    page_separator: str | None = None
    layout_json: bool = False
    annotate: bool = False
    keep_raw: bool = False
    figure_prompt: str | None = None          # --parse-figures: each figure read again with this prompt
    meta: dict = field(default_factory=dict)  # recorded in the layout JSON (model, mode, prompt, ...)


@dataclass
class Job:
    """One input to convert: its pages (rendered on demand), which of them, and where outputs go."""
    source: Source
    target: Target
    numbers: list[int]
    document: Document | None                # None: rendering from saved raw output alone
    saved: dict[int, ParsedPage] | None = None  # --from-raw: the outputs to render instead of running
    kept: dict[int, ParsedPage] = field(default_factory=dict)  # --retry-incomplete: pages not run again


@dataclass
class DocumentReport:
    source: Source
    target: Target | None = None
    pages: int = 0
    incomplete: list[int] = field(default_factory=list)  # kept with partial text, flagged
    failed: list[str] = field(default_factory=list)      # "page N: reason" for pages not read at all
    problems: list[str] = field(default_factory=list)    # malformed model output, figures not cropped
    error: str | None = None                             # the whole input failed
    skipped: bool = False                                # --skip-existing: already converted
    markdown: str | None = None                          # the Markdown, when it goes to stdout

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and not self.incomplete
