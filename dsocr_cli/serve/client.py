"""The Runner protocol over a `dsocr serve` server: what `--server URL` gives the commands.

Each page is rendered here (a PDF page, an image file with its orientation applied), sent as a
lossless PNG to POST /v1/dsocr/ocr with the run's generation settings, and answered with the full
OcrResult (text, token ids, finish reason, counts, page size), so a command prints exactly what a
local run prints. Pages go concurrently from a thread pool (the server batches them with every
other client's); results come back as they finish, each with its request's key.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator

import httpx

from ..errors import DsocrError
from ..preprocess import MODES, modes_for
from ..requests import PENDING, GenerationSettings, OcrRequest, OcrResult, page_image, settings_of
from ..tokenizer import Tokenizer

BUSY_RETRIES = 6         # a full queue (503) is asked again after 0.5, 1, 2, ... s


PAGE_ERRORS = ("invalid_image", "image_too_large")  # what the server says of one page, not of the run


def request_once_more_if_dropped(http: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """http.request, sent again once when the connection closed before any answer: a kept-alive
    connection the server has just timed out looks like that. A page is safe to send twice (the
    server cancels the pages of a client that has gone)."""
    try:
        return http.request(method, path, **kwargs)
    except httpx.RemoteProtocolError:
        return http.request(method, path, **kwargs)


class ThreadClients:
    """One httpx.Client (one connection) per thread. httpx's sync connection pool, shared by many
    threads, can close a connection it has just handed to a waiting request (httpcore 1.0.9,
    encode/httpcore#1110): 512 client threads on one pool saw 'Bad file descriptor' failures."""

    def __init__(self, **options):
        self.options = options
        self.local = threading.local()
        self.made: list[httpx.Client] = []
        self.lock = threading.Lock()

    def get(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(limits=httpx.Limits(max_connections=1), **self.options)
            with self.lock:
                self.made.append(client)
        return client

    def close(self) -> None:
        with self.lock:
            for client in self.made:
                client.close()
            self.made.clear()


class PageRefused(Exception):
    pass


class RemoteRunner:
    def __init__(self, url: str, settings: GenerationSettings, api_key: str | None = None, logprobs: bool = False,
                 concurrency: int = 64, timeout: float | None = None):
        self.url = url.rstrip("/")
        self.settings, self.logprobs, self.concurrency = settings, logprobs, concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.clients = ThreadClients(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self._tokenizer: Tokenizer | None = None
        self.engines, self.devices, self.pages_done = 1, [], []  # one engine, the server's; progress unknown
        self.live_requests = True

    @property
    def tokenizer(self) -> Tokenizer:
        """The server's tokenizer (to turn streamed token ids into text), fetched once."""
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_json(self._call("GET", "/v1/dsocr/tokenizer").text)
        return self._tokenizer

    def model_name(self) -> str:
        """The name the server gives its model (what a local run records as --model)."""
        return self._call("GET", "/v1/models").json()["data"][0]["id"]

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: Callable[[object, int], None] | None = None) -> Iterator[OcrResult]:
        """Results as the server finishes them; at most `concurrency` pages in flight."""
        settings = settings or self.settings
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="dsocr-client") as pool:
            flying: set[Future] = set()
            try:
                for request in requests:
                    if request is PENDING or len(flying) >= self.concurrency:
                        done, flying = wait(flying, return_when=FIRST_COMPLETED)
                        yield from (f.result() for f in done)
                    if request is not PENDING:
                        flying.add(pool.submit(self.run_one, request, settings, on_token))
                while flying:
                    done, flying = wait(flying, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            finally:
                for future in flying:
                    future.cancel()

    def run_one(self, request: OcrRequest, settings: GenerationSettings, on_token=None) -> OcrResult:
        try:
            page = page_image(request)
            png = io.BytesIO()
            page.save(png, "PNG", compress_level=1)
        except Exception as exc:  # as the engine's workers report a page they cannot prepare
            return OcrResult(request.key, "", [], "error", 0, 0, error=f"{type(exc).__name__}: {exc}")
        files = {"image": ("page.png", png.getvalue(), "image/png")}
        data = {"options": json.dumps(self._options(request, settings, on_token is not None))}
        try:
            record = self._send(files, data, request.key, on_token)
        except PageRefused as exc:  # this page alone: the others still run
            return OcrResult(request.key, "", [], "error", 0, 0, error=str(exc), page_size=page.size)
        size = record.get("page_size")
        return OcrResult(request.key, record["text"], record["token_ids"], record["finish_reason"],
                         record["prompt_tokens"], record["vision_tokens"],
                         record.get("token_logprobs") if self.logprobs else None, record.get("error"),
                         tuple(size) if size else None)

    def _send(self, files: dict, data: dict, key, on_token) -> dict:
        """The server's result record for one page; streamed tokens go to on_token(key, token)."""
        if on_token is None:
            return self._call("POST", "/v1/dsocr/ocr", files=files, data=data).json()
        try:
            with self.clients.get().stream("POST", "/v1/dsocr/ocr", files=files, data=data) as response:
                self._check(response, streamed=True)
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "token" in event:
                        on_token(key, event["token"])
                    elif "result" in event:
                        return event["result"]
        except httpx.HTTPError as exc:
            raise DsocrError(f"cannot reach the dsocr server at {self.url}: {exc}") from None
        raise DsocrError(f"the dsocr server at {self.url} ended a stream without a result")

    def _options(self, request: OcrRequest, settings: GenerationSettings, stream: bool) -> dict:
        if modes_for(request.mode.model_kind).get(request.mode.name) != request.mode:
            raise DsocrError(f"mode {request.mode.name} is not one a server knows ({', '.join(MODES)})")
        settings = settings_of(request, settings)
        return {"prompt": request.prompt, "mode": request.mode.name, "max_new_tokens": settings.max_new_tokens,
                "ngram_size": settings.ngram_size, "ngram_window": settings.ngram_window,
                "loop_span": settings.loop_span, "ignore_eos": settings.ignore_eos,
                "logprobs": self.logprobs, "stream": stream}

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(BUSY_RETRIES + 1):
            try:
                response = request_once_more_if_dropped(self.clients.get(), method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise DsocrError(f"cannot reach the dsocr server at {self.url}: {exc}") from None
            if response.status_code != 503 or attempt == BUSY_RETRIES:
                break
            time.sleep(0.5 * 2 ** attempt)
        self._check(response)
        return response

    def _check(self, response: httpx.Response, streamed: bool = False) -> None:
        if response.status_code < 400:
            return
        if streamed:
            response.read()
        try:
            error = response.json()["error"]
            message, code = error["message"], error.get("code")
        except (ValueError, KeyError, TypeError):
            message, code = response.text[:200] or response.reason_phrase, None
        if code in PAGE_ERRORS:
            raise PageRefused(f"the server refused the page: {message}")
        raise DsocrError(f"the dsocr server at {self.url} answered {response.status_code}: {message}")

    def close(self) -> None:
        self.clients.close()


def remote_runner(url: str, logprobs: bool = False, **settings) -> RemoteRunner:
    """What load_runner gives, for a server: `settings` as load_runner takes them (max_new_tokens, the guard)."""
    fields = {k: v for k, v in settings.items() if k in GenerationSettings.__dataclass_fields__}
    return RemoteRunner(url, GenerationSettings(**fields), os.environ.get("DSOCR_API_KEY"), logprobs)


def served_model(url: str) -> str:
    """The model a server runs; also a quick check that it answers, before any work."""
    runner = remote_runner(url)
    try:
        return runner.model_name()
    finally:
        runner.close()
