"""POST /v1/convert: one uploaded PDF or image through the convert pipeline, as `dsocr convert --json`.

The upload is saved to a temporary folder and converted there by dsocr_cli.convert (retry pass
and renderers included) with a LocalRunner, so its pages join the batch of every other client;
the answer carries the Markdown, the layout JSON, the figures and each page's finish reason.
"""
from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from dataclasses import replace
from pathlib import Path, PurePath

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import convert as pipeline
from .. import prompts
from ..documents import DPI, Source
from ..errors import DsocrError
from ..markdown import MATH_MODES, TABLE_MODES, RenderOptions
from ..prompts import load_prompt
from .bridge import LocalRunner, disconnected
from .images import BadInput, mode_named

FORM_FIELDS = ("mode", "pages", "no_layout", "tables", "math_delimiters", "keep_headers", "page_separator",
               "dpi", "max_new_tokens")


async def convert_upload(request: Request) -> Response:
    """Multipart `file` (PDF or image) plus optional fields named as convert's options (mode, pages,
    no_layout, tables, math_delimiters, keep_headers, page_separator, dpi, max_new_tokens)."""
    server = request.app.state.server
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadInput("send the document as a multipart file field named 'file'")
    fields = {name: form[name] for name in FORM_FIELDS if isinstance(form.get(name), str)}
    options, max_new_tokens = _options(fields, server)
    with tempfile.TemporaryDirectory(prefix="dsocr-serve-") as folder:
        name = PurePath(upload.filename or "").name
        name = name if name and not name.startswith(".") else "upload"  # the type is then told by content
        path = Path(folder, "in", name)
        path.parent.mkdir()
        path.write_bytes(await upload.read())
        jobs, reports = pipeline.plan_jobs([Source(path, PurePath(name))], f"{folder}/out/", options)
        if reports:
            raise BadInput(f"{name}: {reports[0].error}")
        job = jobs[0]
        if len(job.numbers) > server.limits.max_pages:
            raise BadInput(f"{name} has {len(job.numbers)} pages to convert, over this server's limit of "
                           f"{server.limits.max_pages} a request (send fewer with 'pages')", 413, "too_many_pages")
        job.document = replace(job.document, max_pixels=server.limits.max_pixels)
        runner = LocalRunner(server.scheduler)
        runner.settings = replace(runner.settings, max_new_tokens=max_new_tokens)
        work = asyncio.ensure_future(asyncio.to_thread(lambda: list(pipeline.convert(jobs, runner, options))))
        gone = asyncio.ensure_future(disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            runner.stop()
            await work
            return Response(status_code=499)
        gone.cancel()
        return JSONResponse(_answer(work.result()[0], name))


def _options(fields: dict, server) -> tuple[pipeline.ConvertOptions, int]:
    mode = mode_named(fields.get("mode"), server.mode)
    tables, math = fields.get("tables", "auto"), fields.get("math_delimiters", "dollars")
    if tables not in TABLE_MODES or math not in MATH_MODES:
        raise BadInput(f"tables: {', '.join(TABLE_MODES)}; math_delimiters: {', '.join(MATH_MODES)}")
    cap = server.scheduler.base.max_new_tokens
    dpi, max_new_tokens = _number(fields, "dpi", DPI, 36, 600), _number(fields, "max_new_tokens", cap, 1, cap)
    prompt = prompts.FREE_OCR if _flag(fields, "no_layout") else prompts.DOCUMENT
    options = pipeline.ConvertOptions(
        mode=mode, prompt=load_prompt(prompt), dpi=dpi, pages=fields.get("pages") or None,
        render=RenderOptions(tables=tables, math=math, keep_headers=_flag(fields, "keep_headers")),
        page_separator=fields.get("page_separator"), layout_json=True,
        meta={"model": server.model_name, "mode": mode.name, "prompt": prompt, "dpi": dpi})
    return options, max_new_tokens


def _number(fields: dict, name: str, default: int, low: int, high: int) -> int:
    text = fields.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadInput(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _flag(fields: dict, name: str) -> bool:
    return fields.get(name, "false").lower() in ("1", "true", "yes", "on")


def _answer(report: pipeline.DocumentReport, name: str) -> dict:
    """The document's outputs, read back from the temporary folder before it goes."""
    if report.error:
        raise BadInput(f"{name}: {report.error}", 422, "conversion_failed")
    target = report.target
    try:
        layout = json.loads(target.layout.read_text(encoding="utf-8"))
        markdown = target.markdown.read_text(encoding="utf-8")
    except OSError as exc:
        raise DsocrError(f"{name}: outputs missing: {exc}") from None
    figures = {p.name: base64.b64encode(p.read_bytes()).decode() for p in sorted(target.figures.glob("*")) if p.is_file()}
    return {"source": name, "markdown": markdown, "layout": layout, "figures": figures,
            "figure_link": target.figure_link,
            "pages": [{"page": p["page"], "finish_reason": p["finish_reason"], "flags": p["flags"]} for p in layout["pages"]],
            "incomplete": report.incomplete, "failed": report.failed, "problems": report.problems}
