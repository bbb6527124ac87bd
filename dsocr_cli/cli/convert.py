"""`dsocr convert`: documents in, Markdown + figures (+ layout JSON, annotated pages) out."""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import checkpoint, prompts, saved, storage
from .. import convert as pipeline
from ..checkpoint import model_name
from ..documents import DPI, DocumentError, expand_inputs, format_pages, open_document
from ..errors import DsocrError
from ..folder_lock import lock_folder
from ..manifest import Manifest, fingerprint, manifest_name
from ..markdown import MATH_MODES, TABLE_MODES, RenderOptions
from ..outputs.kept import read_kept_pages
from ..prompts import load_prompt
from ..requests import Runner
from ..shard import parse_shard
from ..writers import folder_for_several, is_done, is_folder, plan_outputs, remove_temporaries
from .common import KvDtypeOpt, PromptFileOpt, choices, mode_of, resolve_prompt, stderr, warn
from .options import GUARDED, ModelChoice, model_options


@model_options(*GUARDED)
def convert(
    choice: ModelChoice,
    inputs: Annotated[Optional[list[str]], typer.Argument(
        help="PDFs, images (png jpg tiff webp bmp gif), folders (searched recursively), or - to read "
             "one path per line from stdin.", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="report.md for one input, DIR/ for several (input paths kept below it; DIR without / "
                               "too, when it does not exist and has no suffix), "
                               "or - for stdout. Default: beside each input. Inputs and DIR/ may be URIs "
                               "(file://, s3://, ...: what fsspec opens).")] = None,
    no_layout: Annotated[bool, typer.Option("--no-layout", help="Free OCR: no layout blocks, boxes or figures.")] = False,
    prompt_file: PromptFileOpt = None,
    pages: Annotated[Optional[str], typer.Option("--pages", help="Pages to convert, 1-based: 1-3,7,10-")] = None,
    dpi: Annotated[int, typer.Option("--dpi", min=36, max=600, help="Resolution PDF pages are rendered at.")] = DPI,
    tables: Annotated[str, typer.Option("--tables", metavar=choices(TABLE_MODES), help="auto (HTML only with merged cells), html or markdown.")] = "auto",
    math: Annotated[str, typer.Option("--math-delimiters", metavar=choices(MATH_MODES), help="dollars ($..$ and $$..$$) or latex (keep the LaTeX delimiters the model wrote).")] = "dollars",
    keep_headers: Annotated[bool, typer.Option("--keep-headers", help="Keep page headers, footers and page numbers.")] = False,
    page_separator: Annotated[Optional[str], typer.Option(
        "--page-separator", help="Put this between pages ({page}: the next page's number), e.g. '---'.")] = None,
    layout_json: Annotated[bool, typer.Option("--json", help="Also write NAME_layout.json: per page its size, raw "
                                                             "output, finish reason and blocks with boxes.")] = False,
    annotate: Annotated[bool, typer.Option("--annotate", help="Also write the layout drawn over the pages "
                                                              "(NAME_layout.pdf; PNG for images).")] = False,
    keep_raw: Annotated[bool, typer.Option("--keep-raw", help="Also write the raw model output per page (NAME_raw/).")] = False,
    parse_figures: Annotated[bool, typer.Option(
        "--parse-figures", help="Read every figure again (prompt: parse-figure): a chart's table goes under it (and, with "
                                "--json, a CSV beside its image), a structure's checked SMILES, else its text as alt text.")] = False,
    from_raw: Annotated[Optional[Path], typer.Option(
        "--from-raw", help="Render saved raw output (a layout JSON, a NAME_raw/ folder or a text file) instead of "
                           "running the model. With one input, its pages give sizes and figures.")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave inputs whose Markdown exists (resume a batch).")] = False,
    retry_incomplete: Annotated[bool, typer.Option(
        "--retry-incomplete", help="With -o DIR/: convert again the documents the manifest records incomplete "
                                   "(pages unfinished or unread), not only those not done.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or summary; errors only.")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Most pages decoded at once (default: as "
                                                                        "many as GPU memory holds).")] = None,
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", help="all or GPU indices (0,1,3): one engine per GPU, each handed pages as it makes room. "
                       "Without CUDA: one CPU engine.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="I/N: convert only shard I (0..N-1) of the inputs, split stably by name (job arrays); "
                        "I/A-B for an array numbered A..B, e.g. $SLURM_ARRAY_TASK_ID/1-8.")] = None,
    compile: Annotated[bool, typer.Option(
        "--compile", help="Compile the decode step (torch.compile): 30-50 s more to start, then faster steps "
                          "(README, Speed). Worth it for long runs.")] = False,
    kv_dtype: KvDtypeOpt = "auto",
    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="[ADDRESS]", help="Run on a Ray cluster (needs the ray extra: pip install 'dsocr\\[ray]'): ADDRESS as ray.init "
                                          "takes it (auto, ray://host:10001); bare --ray starts or joins a local Ray.")] = None,
) -> None:
    """Convert documents to Markdown, with figures, tables and math; pages run in batches on the GPU.

    With -o DIR/, DIR/dsocr-manifest.jsonl records each document as it finishes (done or incomplete,
    with its outputs' checksums, or failed, with the reason): running the same command again skips
    the documents done or incomplete and converts the rest; --retry-incomplete converts the
    incomplete ones again too. One run at a time writes to DIR/ (a second is refused).

    Exit status: 0 all converted, 1 some inputs or pages failed or are incomplete, this run or an
    earlier one (the rest is written), 2 usage error.
    """
    if tables not in TABLE_MODES:
        raise DsocrError(f"--tables {tables}: use one of {', '.join(TABLE_MODES)}")
    if math not in MATH_MODES:
        raise DsocrError(f"--math-delimiters {math}: use one of {', '.join(MATH_MODES)}")
    if gpus is not None and ray is not None:
        raise DsocrError("--gpus and --ray do not go together (Ray gives each engine a GPU itself)")
    if choice.server and (gpus is not None or ray is not None):
        raise DsocrError("--server does not go with --gpus or --ray: the server runs the engine")
    if (gpus is not None or ray is not None) and choice.device != "auto":
        raise DsocrError("--device does not go with --gpus or --ray: they pick the devices")
    prompt_name = prompts.FREE_OCR if no_layout else prompts.DOCUMENT
    options = pipeline.ConvertOptions(
        mode=mode_of(choice.mode, choice.model), prompt=resolve_prompt(None, prompt_file, prompt_name), dpi=dpi, pages=pages,
        render=RenderOptions(tables=tables, math=math, keep_headers=keep_headers), page_separator=page_separator,
        layout_json=layout_json, annotate=annotate, keep_raw=keep_raw,
        figure_prompt=load_prompt(prompts.PARSE_FIGURE) if parse_figures else None,
        meta={"mode": choice.mode.value, "prompt": str(prompt_file) if prompt_file else prompt_name, "dpi": dpi})
    started = time.perf_counter()
    manifest = remote = None
    if from_raw is not None:
        if parse_figures:
            raise DsocrError("--parse-figures runs the model on the figures: it cannot go with --from-raw")
        options = replace(options, meta={"from_raw": from_raw.name, **options.meta})
        jobs, reports = _saved_jobs(inputs or [], from_raw, output, options)
        runner = None
    else:
        if not inputs:
            raise DsocrError("no inputs: give PDFs, images, folders, or - to read paths from stdin")
        if output and storage.is_remote(output):
            remote = storage.RemoteFolder(output, manifest_name(parse_shard(shard) if shard else None))
            output = f"{remote.local}/"
        output = storage.local_path(output) if output else output
        skip = [output] if output and output != "-" else []
        sources = expand_inputs(_local_inputs(inputs), sys.stdin if "-" in inputs else None, skip=skip)
        output = folder_for_several(output, sum(s.error is None for s in sources) > 1 or any(s.root for s in sources))
        options = replace(options, meta={"model": _served_model(choice.server) if choice.server else model_name(choice.model),
                                         **options.meta})
        part = parse_shard(shard) if shard else None
        if output and output != "-" and is_folder(output):
            held = lock_folder(Path(output), f".{manifest_name(part)}.lock")  # noqa: F841 (held until we return)
            manifest = Manifest(Path(output), fingerprint(options), manifest_name(part))
        jobs, reports = pipeline.plan_jobs(sources, output, options,
                                           _finished(skip_existing, retry_incomplete, manifest), part)
        if manifest is not None:
            _prepare_folder(manifest, jobs, reports, retry_incomplete)
        runner = _runner(choice, batch, gpus, ray, compile, kv_dtype) if jobs else None
    for report in reports:
        _record(manifest, remote, report)
        _tell(report, quiet, choice.verbose)
    def record(report, console=stderr):
        _record(manifest, remote, report)
        _tell(report, quiet, choice.verbose, console)

    reports += _run_jobs(jobs, runner, options, started, not quiet and stderr.is_terminal, record)
    if not quiet:
        _summary(reports, time.perf_counter() - started)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


def _run_jobs(jobs: list[pipeline.Job], runner: Runner | None, options: pipeline.ConvertOptions, started: float,
              show: bool, record) -> list[pipeline.DocumentReport]:
    """Every job through the pipeline, each report recorded as its document is written; the one
    progress display: files, pages, and with --gpus a line per engine."""
    done: list[pipeline.DocumentReport] = []
    total_pages = sum(len(job.numbers) - len(job.kept) for job in jobs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                  console=stderr, disable=not show, transient=True) as progress:
        files = progress.add_task("files", total=len(jobs), rate="")
        page_bar = progress.add_task("pages", total=total_pages, rate="")
        engines = runner.devices if runner is not None else []  # --gpus: one line per engine
        engine_bars = [progress.add_task(f"  {device}", total=None, rate="") for device in engines]
        done_pages = 0

        def on_page(job, page):
            nonlocal done_pages
            done_pages += 1
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(page_bar, completed=min(done_pages, total_pages), rate=f"{done_pages / elapsed:.2f} pages/s")
            for bar, count in zip(engine_bars, runner.pages_done):
                progress.update(bar, completed=count, rate=f"{count / elapsed:.2f} pages/s")

        try:
            for report in pipeline.convert(jobs, runner, options, on_page):
                progress.advance(files)
                if report.markdown is not None:
                    sys.stdout.write(report.markdown)
                    sys.stdout.flush()
                done.append(report)
                record(report, progress.console)
        finally:
            if runner is not None:
                runner.close()
    return done


def _runner(choice: ModelChoice, batch: int | None, gpus: str | None, ray: str | None, compile: bool,
            kv_dtype: str) -> Runner:
    """The engine: one on `device`, one per GPU (--gpus) in worker processes, a Ray actor pool, or a server's."""
    settings = choice.settings
    if choice.server:
        from ..serve import runner_for
        return runner_for(choice.server, choice.model, **settings)
    from ..engine.multi import MultiRunner, engine_devices
    from ..engine.spec import EngineSpec
    from ..runner import load_runner, open_model, preprocess_workers

    if gpus is None and ray is None:
        return load_runner(choice.model, choice.device, choice.dtype, max_batch=batch, compile=compile,
                           kv_dtype=kv_dtype, **settings)
    devices = engine_devices(gpus) if gpus is not None else None  # a typo fails before any download
    load = partial(open_model, checkpoint.resolve(choice.model), dtype=choice.dtype)  # resolved (downloaded) once, here
    if ray is not None:
        from ..ray_pipeline import RayRunner
        return RayRunner(ray, EngineSpec(load, settings, batch, compile=compile, kv_dtype=kv_dtype))
    return MultiRunner(devices, EngineSpec(load, settings, batch, preprocess_workers(devices[0], len(devices)),
                                           compile=compile, kv_dtype=kv_dtype))


def _served_model(server: str) -> str:
    from ..serve.client import served_model
    return served_model(server)


def _finished(skip_existing: bool, retry_incomplete: bool, manifest: Manifest | None):
    """Which planned documents to leave: recorded done (or incomplete, unless retried) in the
    manifest, or (--skip-existing) with Markdown."""
    recorded = partial(manifest.finished, retry_incomplete=retry_incomplete) if manifest is not None else None
    if skip_existing:
        return lambda target: is_done(target) or (recorded is not None and recorded(target))
    return recorded


def _prepare_folder(manifest: Manifest, jobs: list[pipeline.Job], reports: list[pipeline.DocumentReport],
                    retry_incomplete: bool) -> None:
    """Leftovers of a killed run removed; documents left incomplete keep that damage in their report,
    or (--retry-incomplete) their well-read pages, so only the flagged ones run again."""
    remove_temporaries([job.target for job in jobs] + [r.target for r in reports if r.target is not None])
    for job in jobs if retry_incomplete else ():
        kept = read_kept_pages(job.target, job.numbers) if manifest.incomplete(job.target) else {}
        job.kept = kept if len(kept) < len(job.numbers) else {}
    for report in reports:
        if report.skipped:
            report.incomplete, report.failed = manifest.damage(report.target)


def _record(manifest: Manifest | None, remote: storage.RemoteFolder | None, report: pipeline.DocumentReport) -> None:
    """The document's manifest line; with an output in a store, its outputs and the manifest uploaded.
    A line or upload that fails is this document's error (it counts as failed), not the batch's."""
    if manifest is None or report.skipped:
        return
    try:
        entry = manifest.record(report)
        if remote is not None:
            remote.push(list(entry.get("outputs", {})))
    except DsocrError as exc:
        report.error = str(exc)


def _local_inputs(inputs: list[str]) -> list[str]:
    """file:// URIs as paths; inputs in a store downloaded to a temporary folder first."""
    into = None
    local = []
    for arg in inputs:
        if storage.is_remote(arg):
            into = into or Path(tempfile.mkdtemp(prefix="dsocr-in-"))
            arg = storage.fetch_input(arg, into)
        local.append(storage.local_path(arg))
    return local


def _saved_jobs(inputs: list[str], raw: Path, output: str | None, options: pipeline.ConvertOptions):
    """One job rendering saved raw output, with the input document (one) when given."""
    if len(inputs) > 1:
        raise DsocrError("--from-raw renders one document: give at most one input")
    recorded, pages = saved.read_saved(raw)
    document = None
    if inputs:
        sources = expand_inputs(inputs, sys.stdin if "-" in inputs else None)
        if len(sources) != 1:
            raise DsocrError(f"--from-raw renders one document: {inputs[0]} holds {len(sources)}")
        source = sources[0]
        try:
            document = open_document(source, options.dpi)
        except DocumentError as exc:
            raise DsocrError(f"{source.path}: {exc}") from None
    else:
        if output is None:
            raise DsocrError("--from-raw without the input document needs -o (a file, DIR/ or -)")
        if (options.layout_json or options.annotate) and any(page.size is None for page in pages.values()):
            raise DsocrError("--json and --annotate need page sizes, which raw text files do not record: "
                             "give the input document too, or render from the layout JSON")
        source = saved.source_for(recorded or raw.name)
    target = plan_outputs([source], output)[0]
    return [saved.saved_job(pages, source, target, document, options.pages)], []


def _tell(report: pipeline.DocumentReport, quiet: bool, verbose: bool, console=stderr) -> None:
    """Failures always, one line each; with -v, every document as it is written."""
    name = report.source.path
    if report.error:
        console.print(f"dsocr: {name}: {report.error}", markup=False, highlight=False)
        return
    if report.skipped and not report.ok:
        damage = [f"{_count(len(report.incomplete), 'page')} incomplete"] if report.incomplete else []
        damage += [f"{_count(len(report.failed), 'page')} unread"] if report.failed else []
        console.print(f"dsocr: {name}: left damaged by an earlier run ({', '.join(damage)}); "
                      "--retry-incomplete converts it again", markup=False, highlight=False)
        return
    for failure in report.failed:
        console.print(f"dsocr: {name}: {failure}", markup=False, highlight=False)
    if report.incomplete and not quiet:
        numbers = format_pages(report.incomplete)
        pages = "page" if len(report.incomplete) == 1 else "pages"
        console.print(f"dsocr: {name}: {pages} {numbers} incomplete (kept, marked in the Markdown)",
                      markup=False, highlight=False)
    if verbose and not quiet:
        what = "skipped (done already)" if report.skipped else f"{_count(report.pages, 'page')} -> {report.target.markdown or 'stdout'}"
        console.print(f"dsocr: {name}: {what}", markup=False, highlight=False)
        for problem in report.problems:
            console.print(f"dsocr:   {problem}", markup=False, highlight=False)


def _summary(reports: list[pipeline.DocumentReport], seconds: float) -> None:
    converted = [r for r in reports if r.error is None and not r.skipped]
    pages = sum(r.pages for r in converted)
    parts = [f"{len(converted)} converted ({_count(pages, 'page')}, {seconds:.1f} s, {pages / max(seconds, 1e-9):.2f} pages/s)"]
    skipped = sum(r.skipped for r in reports)
    failed = [r for r in reports if r.error]
    incomplete = sum(len(r.incomplete) for r in reports)
    bad_pages = sum(len(r.failed) for r in reports)
    if skipped:
        damaged = sum(r.skipped and not r.ok for r in reports)
        parts.append(f"{skipped} skipped" + (f" ({damaged} left damaged: --retry-incomplete)" if damaged else ""))
    if failed:
        parts.append(f"{len(failed)} failed")
    if bad_pages:
        parts.append(f"{_count(bad_pages, 'page')} unreadable")
    if incomplete:
        parts.append(f"{_count(incomplete, 'page')} incomplete")
    warn("; ".join(parts))
    for report in failed:
        warn(f"  failed: {report.source.path}: {report.error}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
