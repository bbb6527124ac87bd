"""The HTTP face of one engine: OpenAI chat completions, dsocr's own OCR and convert endpoints, health
and metrics. Every handler only translates: requests go to the shared Scheduler, results come back.

Endpoints (README, Server): POST /v1/chat/completions, GET /v1/models, POST /v1/dsocr/ocr (what
`--server` clients use: token ids, finish reason and counts of a local run), GET /v1/dsocr/tokenizer,
POST /v1/convert, GET /health, GET /metrics (Prometheus text).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from ..errors import DsocrError
from ..preprocess import Mode
from ..requests import OcrRequest, OcrResult, TextStream
from ..tokenizer import Tokenizer
from . import openai_api
from .bridge import GUARD_FIELDS, Pending, guard_for
from .convert_api import convert_upload
from .guard import Guard
from .images import BadInput, Limits, checked_image, mode_named
from .metrics import prometheus_text
from .scheduler import QueueFull, Scheduler


# what a client may ask of the repetition guard (bounded: the guard's state is sized by them)
GUARD_RANGES = {"ngram_size": (0, 256), "ngram_window": (1, 4096), "loop_span": (0, 4096)}


@dataclass
class Server:
    scheduler: Scheduler
    tokenizer: Tokenizer
    model_name: str
    mode: Mode                       # for chat requests that name none
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    logprobs: bool = False           # the engine computes log-probabilities
    responses: Counter = field(default_factory=Counter)  # (endpoint, status) -> count


def create_app(server: Server) -> Guard:
    app = FastAPI(title="dsocr", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_exception_handler(BadInput, _bad_input)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(DsocrError, _dsocr_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/dsocr/ocr", dsocr_ocr, methods=["POST"])
    app.add_api_route("/v1/dsocr/tokenizer", tokenizer_json, methods=["GET"])
    app.add_api_route("/v1/convert", convert_upload, methods=["POST"])
    return Guard(app, server)


def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """A client that hung up mid-upload: nobody to answer (499, nginx's "client closed request", for
    /metrics), and no traceback in the server's log, since nothing went wrong in the server."""
    return Response(status_code=499)


def _bad_input(request: Request, exc: BadInput) -> JSONResponse:
    return JSONResponse(openai_api.error_body(str(exc), exc.code), status_code=exc.status)


def _dsocr_error(request: Request, exc: DsocrError) -> JSONResponse:
    return JSONResponse(openai_api.error_body(str(exc)), status_code=400)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    message = f"internal error ({type(exc).__name__}: {exc}); please report it"
    return JSONResponse(openai_api.error_body(message, "internal_error", "server_error"), status_code=500)


def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
    return JSONResponse(openai_api.error_body(str(exc), "overloaded", "server_error"), status_code=503)


def _server(request: Request) -> Server:
    return request.app.state.server


async def health(request: Request) -> dict:
    server = _server(request)
    return {"status": "ok", "model": server.model_name, "queued": server.scheduler.queued(),
            "running": len(server.scheduler.running)}


async def metrics(request: Request) -> PlainTextResponse:
    server = _server(request)
    return PlainTextResponse(prometheus_text(server.scheduler, server.responses),
                             media_type="text/plain; version=0.0.4")


async def models(request: Request) -> dict:
    server = _server(request)
    return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0, "owned_by": "dsocr"}]}


async def tokenizer_json(request: Request) -> Response:
    return Response(_server(request).tokenizer.to_json(), media_type="application/json")


async def _json_body(request: Request) -> dict:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None


async def chat_completions(request: Request) -> Response:
    server = _server(request)
    call = openai_api.parse_chat(await _json_body(request), server.limits, server.mode,
                                 server.scheduler.base.max_new_tokens, server.model_name)
    pending = Pending(server.scheduler, call.request, server.scheduler.base, call.stream)
    cid = openai_api.completion_id()
    if call.stream:
        return _sse(_chat_events(server, call, pending, cid), pending)
    result = await pending.result(request)
    if result is None:
        return Response(status_code=499)
    if result.error:
        raise BadInput(f"the image could not be read: {result.error}")
    return JSONResponse(openai_api.completion(call, result, cid))


async def _chat_events(server: Server, call, pending: Pending, cid: str):
    deltas: list[str] = []
    text = TextStream(server.tokenizer, deltas.append)
    sent = ""
    yield openai_api.chunk(call, cid, {"role": "assistant", "content": ""})
    while True:
        item = await pending.next()
        if isinstance(item, OcrResult):
            break
        text(item)
        if deltas:
            sent += "".join(deltas)
            yield openai_api.chunk(call, cid, {"content": "".join(deltas)})
            deltas.clear()
    if item.error:
        yield openai_api.error_body(f"the image could not be read: {item.error}")
        return
    if item.text.startswith(sent) and len(item.text) > len(sent):  # what the stream held back
        yield openai_api.chunk(call, cid, {"content": item.text[len(sent):]})
    yield openai_api.chunk(call, cid, {}, finish=item)
    if call.include_usage:
        yield openai_api.usage_chunk(call, cid, item)


def _sse(events, pending: Pending) -> StreamingResponse:
    """Server-sent events, `data: [DONE]` last; a client that leaves cancels its request."""
    async def body():
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            pending.cancel()
    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def dsocr_ocr(request: Request) -> Response:
    """One page for a `--server` client: multipart `image` (any image file) and `options` (JSON)."""
    server = _server(request)
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise BadInput("send the page as a multipart file field named 'image'")
    options = _ocr_options(form.get("options") or "{}", server)
    image = checked_image(await upload.read(), server.limits)
    ocr = OcrRequest(image, options["prompt"], options["mode"], max_new_tokens=options["max_new_tokens"])
    guard = guard_for(server.scheduler, **{k: options[k] for k in GUARD_FIELDS if k in options})
    pending = Pending(server.scheduler, ocr, guard, bool(options.get("stream")))
    if options.get("stream"):
        return _sse(_ocr_events(pending), pending)
    result = await pending.result(request)
    return JSONResponse(result_record(result)) if result is not None else Response(status_code=499)


async def _ocr_events(pending: Pending):
    while True:
        item = await pending.next()
        if isinstance(item, OcrResult):
            yield {"result": result_record(item)}
            return
        yield {"token": item}


def _ocr_options(text: str, server: Server) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"'options' is not JSON: {exc}") from None
    if not isinstance(options, dict) or not isinstance(options.get("prompt"), str):
        raise BadInput("'options' must be a JSON object with a 'prompt' string")
    options["mode"] = mode_named(options.get("mode"), server.mode)
    cap = server.scheduler.base.max_new_tokens
    options.setdefault("max_new_tokens", cap)
    limit = options["max_new_tokens"]
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= cap:
        raise BadInput(f"max_new_tokens must be 1..{cap} (this server's limit; start it with --max-new-tokens for more)")
    for name, (low, high) in GUARD_RANGES.items():
        value = options.get(name, low)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BadInput(f"{name} must be a whole number from {low} to {high}")
    if options.get("loop_span") in range(1, 8):
        raise BadInput("loop_span must be 0 (off) or at least 8")
    if not isinstance(options.get("ignore_eos", False), bool):
        raise BadInput("ignore_eos must be true or false")
    if options.get("logprobs") and not server.logprobs:
        raise BadInput("this server does not compute log-probabilities (start it with --logprobs)")
    return options


def result_record(result: OcrResult) -> dict:
    """An OcrResult as JSON, all of it: a client rebuilds the very result a local run gives."""
    return {"text": result.text, "token_ids": result.token_ids, "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens, "vision_tokens": result.vision_tokens,
            "token_logprobs": result.token_logprobs, "error": result.error,
            "page_size": list(result.page_size) if result.page_size else None}
