"""`dsocr convert` as a pipeline: documents -> page requests -> runner -> pages -> rendered, written.

No terminal here: the CLI passes options and a runner and hears of progress through a callback.
Pages stream: each request carries a PageRef that the engine's workers render, results come back
out of order and are collected per document, and a document is rendered and written as soon as
its last page is in. A page that stopped without EOS runs once more with a stronger repetition
guard (requests.stronger_guard), beside the pages still running where the runner allows; if that
fails too its partial text is kept and flagged. No page is ever dropped or renumbered: one that
could not be read at all stays as a flagged empty page.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

from .documents import DocumentError, Source, document_key, open_document, parse_pages
from .figure_pass import read_figures
from .jobs import ConvertOptions, DocumentReport, Job
from .outputs import write_document
from .outputs.document import page_image
from .pages import UNFINISHED, ParsedPage, page_of
from .requests import PENDING, GenerationSettings, OcrRequest, OcrResult, Runner
from .shard import Shard
from .writers import Target, plan_outputs

FIGURE_SLICE_PAGES = 512  # --parse-figures: documents are finished (figures read, written) in slices this big, per engine


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
            on_page: Callable[[Job, ParsedPage], None] = lambda job, page: None) -> Iterator[DocumentReport]:
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
    settings = runner.settings
    slice_pages = FIGURE_SLICE_PAGES * runner.engines  # each pass keeps every engine busy
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
    """The documents `part` indexes: a first pass and its retries of unfinished pages, the figures.
    A runner that takes live requests runs the retries beside the first pass, as they come up."""
    collected: dict[int, dict[int, ParsedPage]] = {j: dict(jobs[j].kept) for j in part}
    outstanding = {j: len(jobs[j].numbers) - len(jobs[j].kept) for j in part}  # results to come, retries included
    retry: deque[tuple[int, int]] = deque()               # pages to run again
    retried: set[tuple[int, int]] = set()                  # pages run again
    first_pass = sum(outstanding.values())                 # first-pass results still to come
    read_whole: list[int] = []                             # --parse-figures: documents whose figures wait

    def request(j: int, n: int, again: bool) -> OcrRequest:
        if again:
            retried.add((j, n))
        return OcrRequest(jobs[j].document.page_ref(n), options.prompt, options.mode, key=(j, n), retry=again)

    def requests(live: bool) -> Iterator[OcrRequest]:
        for j in part:
            yield from (request(j, n, False) for n in jobs[j].numbers if n not in jobs[j].kept)
        while live and (retry or first_pass):
            yield request(*retry.popleft(), True) if retry else PENDING

    def take(result: OcrResult) -> Iterator[DocumentReport]:
        nonlocal first_pass
        j, n = result.key
        again = result.key in retried
        page = page_of(result, n, again)
        collected[j][n] = page
        on_page(jobs[j], page)
        if not again:
            first_pass -= 1
            if page.finish_reason in UNFINISHED:
                retry.append((j, n))
                return
        outstanding[j] -= 1
        if outstanding[j] == 0 and options.figure_prompt:
            read_whole.append(j)
        elif outstanding[j] == 0:
            yield write_document(jobs[j], [collected[j][n] for n in jobs[j].numbers], options)

    for result in runner.run(requests(runner.live_requests), settings=settings):
        yield from take(result)
    if retry:  # a runner that reads its requests in full: the retries are a pass of their own
        for result in runner.run((request(j, n, True) for j, n in list(retry)), settings=settings):
            yield from take(result)
    if read_whole:
        pages = (((j, page.number), page, page_image(jobs[j], page, DocumentReport(jobs[j].source)))
                 for j in read_whole for page in collected[j].values() if page.error is None and page.needs_image)
        readings, crops = read_figures(pages, runner, settings, options.figure_prompt, options.mode)
        for j in read_whole:
            yield write_document(jobs[j], [collected[j][n] for n in jobs[j].numbers], options,
                                 {n: readings[(j, n)] for n in jobs[j].numbers if (j, n) in readings},
                                 {n: crops[(j, n)] for n in jobs[j].numbers if (j, n) in crops})
