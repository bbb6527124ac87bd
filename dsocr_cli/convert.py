"""`dsocr convert` as a pipeline: documents -> page requests -> runner -> pages -> rendered, written.

No terminal here: the CLI passes options and a runner and hears of progress through a callback.
Pages stream: each request carries a PageRef that the engine's workers render, results come back
out of order and are collected per document, and a document is rendered and written as soon as
its last page is in. A page that stopped without EOS runs once more, after the first pass, with a
stronger repetition guard; if that fails too its partial text is kept and flagged. No page is
ever dropped or renumbered: one that could not be read at all stays as a flagged empty page.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Callable, Iterable, Iterator

from PIL import Image

from .annotate import annotate_page, annotation_pdf
from .charts import to_csv
from .documents import DPI, Document, DocumentError, PageError, Source, open_document, parse_pages
from .errors import DsocrError
from .figure_pass import read_figures
from .figures import FigureReading, figure_markdown
from .generate import GenerationSettings
from .grounding import parse_blocks
from .layout import document_layout, failed_page_layout, page_layout, raw_pages_from_layout
from .manifest import document_key
from .markdown import RenderOptions, join_pages, render_page
from .preprocess import Mode
from .runner import OcrRequest, OcrResult, Runner
from .shard import Shard
from .writers import Target, plan_outputs, save_image, write_atomic

# The retry guard: n-grams of 20 tokens may not repeat within 256 (the first pass: 30 within 90).
RETRY_NGRAM_SIZE = 20
RETRY_NGRAM_WINDOW = 256
UNFINISHED = ("length", "repetition")
FIGURE_SLICE_PAGES = 512  # --parse-figures: documents are finished (figures read, written) in slices this big, per engine
GRID_PAGE = (1000, 1000)


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
class PageOutcome:
    number: int
    raw: str = ""
    finish_reason: str = "error"             # eos | length | repetition | error
    size: tuple[int, int] | None = None      # page pixels; None when the page could not be read
    error: str | None = None
    retried: bool = False


@dataclass
class Job:
    """One input to convert: its pages (rendered on demand), which of them, and where outputs go."""
    source: Source
    target: Target
    numbers: list[int]
    document: Document | None                # None: rendering from saved raw output alone
    saved: dict[int, PageOutcome] | None = None  # --from-raw: the outputs to render instead of running


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


def plan_jobs(sources: list[Source], output: str | None, options: ConvertOptions,
              finished: Callable[[Target], bool] | None = None,
              shard: Shard | None = None) -> tuple[list[Job], list[DocumentReport]]:
    """Jobs for the readable inputs (of `shard`), and reports for those that fail or are `finished`.

    Output names are planned over all the inputs, so every shard names its outputs alike.
    """
    readable = [source for source in sources if source.error is None]
    targets = dict(zip(map(id, readable), plan_outputs(sources, output)))
    if options.pages:
        parse_pages(options.pages, 0)  # bad syntax is a usage error, before any work
    jobs, reports = [], []
    for source in sources:
        if shard is not None and not shard.holds(document_key(source)):
            continue
        if source.error is not None:
            reports.append(DocumentReport(source, error=source.error))
            continue
        target = targets[id(source)]
        if finished is not None and finished(target):
            reports.append(DocumentReport(source, target, skipped=True))
            continue
        try:
            document = open_document(source, options.dpi)
            numbers = (parse_pages(options.pages, document.page_count) if options.pages
                       else list(range(1, document.page_count + 1)))
        except DocumentError as exc:
            reports.append(DocumentReport(source, target, error=str(exc)))
            continue
        if not numbers:
            reports.append(DocumentReport(source, target, error=f"--pages {options.pages} selects none of its "
                                                                f"{document.page_count} pages"))
            continue
        jobs.append(Job(source, target, numbers, document))
    return jobs, reports


def convert(jobs: list[Job], runner: Runner | None, options: ConvertOptions,
            on_page: Callable[[Job, PageOutcome], None] = lambda job, page: None) -> Iterator[DocumentReport]:
    """Run every job's pages through `runner` and yield each document's report once it is written.

    Jobs with saved outputs (--from-raw) need no runner. Documents come out as they complete, so
    a long batch leaves finished outputs behind it as it goes; with --parse-figures a document also
    waits for its figures, read in one pass per slice of about FIGURE_SLICE_PAGES pages per engine.
    """
    for job in jobs:
        if job.saved is not None:
            yield write_document(job, [job.saved[n] for n in job.numbers], options)
    live = [j for j, job in enumerate(jobs) if job.saved is None]
    if not live:
        return
    settings = runner.settings  # a retry pass changes the runner's; every slice starts from these
    slice_pages = FIGURE_SLICE_PAGES * getattr(runner, "engines", 1)  # each pass keeps every engine busy
    for part in (_slices(jobs, live, slice_pages) if options.figure_prompt else [live]):
        yield from _convert_part(jobs, part, runner, settings, options, on_page)


def _slices(jobs: list[Job], indices: list[int], size: int) -> Iterator[list[int]]:
    """Whole documents in groups of about `size` pages."""
    part, pages = [], 0
    for j in indices:
        part.append(j)
        pages += len(jobs[j].numbers)
        if pages >= size:
            yield part
            part, pages = [], 0
    if part:
        yield part


def _convert_part(jobs: list[Job], part: list[int], runner: Runner, settings: GenerationSettings,
                  options: ConvertOptions, on_page) -> Iterator[DocumentReport]:
    """The documents `part` indexes: a first pass, a retry pass for unfinished pages, the figures."""
    collected: dict[int, dict[int, PageOutcome]] = {j: {} for j in part}
    outstanding = {j: len(jobs[j].numbers) for j in part}  # results still to come, retries included
    retry: list[tuple[int, int]] = []
    read_whole: list[int] = []                             # --parse-figures: documents whose figures wait

    def requests(keys: Iterable[tuple[int, int]]) -> Iterator[OcrRequest]:
        for j, n in keys:
            yield OcrRequest(jobs[j].document.page_ref(n), options.prompt, options.mode, key=(j, n))

    def take(result: OcrResult, retried: bool) -> Iterator[DocumentReport]:
        j, n = result.key
        page = outcome_of(result, n, retried)
        collected[j][n] = page
        on_page(jobs[j], page)
        if page.finish_reason in UNFINISHED and not retried:
            retry.append((j, n))
            return
        outstanding[j] -= 1
        if outstanding[j] == 0 and options.figure_prompt:
            read_whole.append(j)
        elif outstanding[j] == 0:
            yield write_document(jobs[j], [collected[j][n] for n in jobs[j].numbers], options)

    for result in runner.run(requests((j, n) for j in part for n in jobs[j].numbers), settings=settings):
        yield from take(result, retried=False)
    if retry:
        for result in runner.run(requests(list(retry)), settings=stronger_guard(settings)):
            yield from take(result, retried=True)
    if read_whole:
        pages = (((j, page.number), page.raw, _page_image(jobs[j], page, options, DocumentReport(jobs[j].source)))
                 for j in read_whole for page in collected[j].values() if page.error is None)
        readings = read_figures(pages, runner, settings, options.figure_prompt, options.mode)
        for j in read_whole:
            yield write_document(jobs[j], [collected[j][n] for n in jobs[j].numbers], options,
                                 {n: readings[(j, n)] for n in jobs[j].numbers if (j, n) in readings})


def stronger_guard(settings: GenerationSettings) -> GenerationSettings:
    size = min(settings.ngram_size, RETRY_NGRAM_SIZE) if settings.ngram_size else RETRY_NGRAM_SIZE
    return replace(settings, ngram_size=size, ngram_window=max(settings.ngram_window, RETRY_NGRAM_WINDOW))


def outcome_of(result: OcrResult, number: int, retried: bool = False) -> PageOutcome:
    if result.error is not None:
        return PageOutcome(number, error=result.error, size=result.page_size, retried=retried)
    return PageOutcome(number, result.text, result.finish_reason, result.page_size, retried=retried)


def write_document(job: Job, pages: list[PageOutcome], options: ConvertOptions,
                   figure_readings: dict[int, dict[str, FigureReading]] | None = None) -> DocumentReport:
    """Render the pages and write the document's outputs, the Markdown last (it marks completion)."""
    target = job.target
    report = DocumentReport(job.source, target, pages=len(pages))
    render = replace(options.render, figure_dir=target.figure_link)
    markdown, layouts, drawings = [], [], []
    try:
        for page in pages:
            if page.error is not None:
                report.failed.append(f"page {page.number}: {page.error}")
                markdown.append(f"<!-- dsocr: page {page.number} could not be converted: {_comment(page.error)} -->")
                layouts.append(failed_page_layout(page.number, page.error, page.size))
                continue
            image = _page_image(job, page, options, report)
            size = page.size or (image.size if image is not None else None)
            if size is None and (options.layout_json or options.annotate):
                raise DsocrError(f"page {page.number}: the page size is unknown (give the input document too)")
            # Without a size (raw text rendered alone) figures are not cropped, so their boxes never
            # reach pixels: the model's grid stands in.
            readings = (figure_readings or {}).get(page.number, {})
            rendered = render_page(page.raw, page.number, size or GRID_PAGE, image, render, page.finish_reason,
                                   {name: figure_markdown(reading) for name, reading in readings.items()})
            if options.layout_json:
                for name, reading in readings.items():
                    if reading.chart is not None:
                        write_atomic(target.figures / PurePath(name).with_suffix(".csv"), to_csv(reading.chart))
            for figure in rendered.figures:
                if figure.image is not None:
                    save_image(target.figures / figure.name, figure.image)
                elif not (target.figures / figure.name).is_file():
                    report.problems.append(f"page {page.number}: {figure.name} not cropped (no page image)")
            problems = rendered.problems + [f"page {page.number}, {name}: structure not verified: {reading.smiles_error}"
                                            for name, reading in readings.items() if reading.smiles_error]
            report.problems += problems
            if page.finish_reason != "eos":
                report.incomplete.append(page.number)
            markdown.append(rendered.markdown)
            if options.layout_json:
                layouts.append(page_layout(page.raw, page.number, size, page.finish_reason, problems))
                if page.retried:
                    layouts[-1]["flags"].append("retried")
            if options.annotate and image is not None:
                drawings.append(annotate_page(image, parse_blocks(page.raw)))
            if options.keep_raw:
                _write_raw(target.raw, page)
        if options.layout_json:
            layout = document_layout(str(job.source.relative), layouts, **options.meta)
            write_atomic(target.layout, json.dumps(layout, ensure_ascii=False, indent=1) + "\n")
        if options.annotate and drawings:
            _write_annotation(job, target, drawings, [p.number for p in pages if p.error is None], options.dpi)
        text = join_pages(markdown, options.page_separator, [p.number for p in pages])
        if target.markdown is None:
            report.markdown = text
        else:
            write_atomic(target.markdown, text)
    except DsocrError as exc:
        report.error = str(exc)
    except Exception as exc:  # a bug met by one document must not cost the batch the others
        report.error = f"internal error ({type(exc).__name__}: {exc}); please report it"
    return report


def _page_image(job: Job, page: PageOutcome, options: ConvertOptions, report: DocumentReport) -> Image.Image | None:
    """The page again, at full resolution, when figures are cropped from it or the layout drawn on it."""
    wanted = (options.annotate or (options.layout_json and page.size is None)        # the size, from the page
              or any(b.label == "image" and b.boxes for b in parse_blocks(page.raw)))
    if job.document is None or not wanted:
        return None
    try:
        return job.document.page_ref(page.number)()
    except PageError as exc:
        report.problems.append(f"page {page.number}: cannot render it again for figures: {exc}")
        return None


def _write_annotation(job: Job, target: Target, drawings: list[Image.Image], numbers: list[int], dpi: int) -> None:
    if job.document is not None and job.document.kind == "image":
        if len(drawings) == 1:
            save_image(target.annotation.with_suffix(".png"), drawings[0])
        else:
            for number, drawing in zip(numbers, drawings):
                save_image(target.annotation.with_name(f"{target.annotation.stem}_p{number}.png"), drawing)
    else:
        write_atomic(target.annotation, annotation_pdf(drawings, dpi))


def _raw_name(number: int, finish_reason: str) -> str:
    """page-0003.txt, or page-0003.length.txt for a page the model did not finish; a reason read
    from a layout file is data, so only letters, digits and _ of it reach the name."""
    reason = re.sub(r"[^A-Za-z0-9_]+", "_", finish_reason)[:40] or "unknown"
    return f"page-{number:04d}.txt" if reason == "eos" else f"page-{number:04d}.{reason}.txt"


def _write_raw(folder: Path, page: PageOutcome) -> None:
    name = _raw_name(page.number, page.finish_reason)
    write_atomic(folder / name, page.raw)
    for reason in ("eos", *UNFINISHED):  # an earlier run's file for this page would contradict it
        stale = folder / _raw_name(page.number, reason)
        if stale.name != name:
            stale.unlink(missing_ok=True)


def _comment(text: str) -> str:
    """Text safe inside an HTML comment, on one line."""
    return " ".join(text.replace("--", "- -").split())


# ---- --from-raw ------------------------------------------------------------------------------------

_PAGE_NUMBER = re.compile(r"([0-9]+)(?![\s\S]*[0-9])")
MAX_SAVED_PAGE = 1_000_000


def read_saved(path: Path) -> tuple[str | None, dict[int, PageOutcome]]:
    """Saved raw output: a layout JSON, a folder of per-page text files, or one text file (page 1).

    In a folder, the page number is the last number in a file's name; page-0003.length.txt (as
    --keep-raw names it) marks a page the model did not finish.

    Returns the source name the layout JSON records (None for text) and the pages by number.
    """
    if path.is_dir():
        files = [f for f in path.iterdir() if f.suffix.lower() in (".txt", ".md", ".mmd") and not f.name.startswith(".")]
        numbered = {}
        for file in files:
            stem, _, reason = file.stem.partition(".")
            match = _PAGE_NUMBER.search(stem)
            if match is None:
                raise DsocrError(f"--from-raw {path}: {file.name} has no page number in its name (e.g. page-0003.txt)")
            number = int(match.group(1))
            if not 1 <= number <= MAX_SAVED_PAGE:
                raise DsocrError(f"--from-raw {path}: {file.name} names page {number}, not one of 1..{MAX_SAVED_PAGE:,}")
            if number in numbered:
                raise DsocrError(f"--from-raw {path}: two files for page {number}")
            numbered[number] = PageOutcome(number, _read_text(file), reason if reason in UNFINISHED else "eos")
        if not numbered:
            raise DsocrError(f"--from-raw {path}: no .txt/.md page files in this folder")
        return None, numbered
    text = _read_text(path)
    if path.suffix.lower() != ".json":
        return None, {1: PageOutcome(1, text, "eos")}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DsocrError(f"--from-raw {path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DsocrError(f"--from-raw {path}: JSON nested too deeply to be a layout file") from None
    pages = {}
    for number, raw, reason, size, error in raw_pages_from_layout(doc):
        pages[number] = PageOutcome(number, raw, reason, size, error)
    return str(doc.get("source") or path.stem), pages


def saved_job(saved: dict[int, PageOutcome], source: Source, target: Target, document: Document | None,
              pages: str | None) -> Job:
    """A job rendering saved outputs; with the input document, its pages give sizes and figures."""
    numbers = sorted(saved)
    if not numbers:
        raise DsocrError("the saved output has no pages")
    if pages:
        wanted = set(parse_pages(pages, max(numbers)))
        numbers = [n for n in numbers if n in wanted]
    if not numbers:
        raise DsocrError(f"--pages {pages} selects none of the saved pages")
    if document is not None and numbers[-1] > document.page_count:
        raise DsocrError(f"the saved output has page {numbers[-1]}, but {source.path} has "
                         f"{document.page_count} pages")
    return Job(source, target, numbers, document, {n: saved[n] for n in numbers})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DsocrError(f"--from-raw {path}: no such file or folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DsocrError(f"--from-raw {path}: cannot read it: {exc}") from None


def source_for(name: str) -> Source:
    """A stand-in input for saved outputs read without their document (names the outputs); a
    recorded name is data: only its last part names them ("/", ".." and "" give "document")."""
    base = PurePath(name).name
    base = base if base not in ("", ".", "..") else "document"
    return Source(Path(base), PurePath(base))
