"""`dsocr serve`: load the model once, answer OCR requests over HTTP (OpenAI-compatible) until stopped."""
from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import DsocrError
from .common import (DEFAULTS, DeviceOpt, DtypeOpt, KvDtypeOpt, MaxTokensOpt, ModelOpt, ModeName, ModeOpt, NgramOpt,
                     NgramWindowOpt, mode_of, warn)

def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network (use --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one (printed).")] = 8000,
    model: ModelOpt = None,
    mode: ModeOpt = ModeName.gundam,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="DSOCR_API_KEY", help="Require Authorization: Bearer KEY on every request.")] = None,
    allow_files: Annotated[Optional[Path], typer.Option("--allow-files", help="Let chat requests name images by path (or file:// URL) inside this folder.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    max_new_tokens: MaxTokensOpt = DEFAULTS.max_new_tokens,
    ngram_size: NgramOpt = DEFAULTS.ngram_size,
    ngram_window: NgramWindowOpt = DEFAULTS.ngram_window,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Most pages decoded at once (default: as many as GPU memory holds).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="Compile the decode step (torch.compile): slower start, faster steps.")] = False,
    kv_dtype: KvDtypeOpt = "auto",
    logprobs: Annotated[bool, typer.Option("--logprobs", help="Compute token log-probabilities (for clients that ask, e.g. ocr --json --logprobs).")] = False,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, MiB.")] = 64,
    max_pixels_mp: Annotated[float, typer.Option("--max-pixels-mp", min=0.01, help="Largest image or rendered page, megapixels.")] = 40,
    max_pages: Annotated[int, typer.Option("--max-pages", min=1, help="Most pages one /v1/convert request may convert.")] = 100,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Most requests waiting; more are refused with 503.")] = 4096,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Benchmarks: the full-size model with seeded random weights (no download).")] = False,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Benchmarks: every page runs to its token limit.")] = False,
) -> None:
    """Serve the model over HTTP: OpenAI chat completions, /v1/convert, and the commands' --server.

    Pages from all clients are decoded together in one batch.

    SIGTERM or Ctrl-C stops taking requests, finishes those in flight, then exits. Endpoints and limits: README, Server.
    """
    try:
        import uvicorn

        from ..serve.app import Server, create_app
    except ModuleNotFoundError as exc:
        raise DsocrError(f"dsocr serve needs the serve extra ({exc.name} is missing): pip install 'dsocr[serve]'") from None
    from ..serve.images import Limits
    from ..serve.scheduler import Scheduler
    from ..serve.setup import open_engine

    if allow_files is not None and not allow_files.is_dir():
        raise DsocrError(f"--allow-files {allow_files}: not a folder")
    listener = _listen(host, port)
    engine, tokenizer, name = open_engine(model, random_weights, device, dtype, batch, compile, logprobs, kv_dtype,
                                          max_new_tokens=max_new_tokens, ngram_size=ngram_size,
                                          ngram_window=ngram_window, ignore_eos=ignore_eos)
    scheduler = Scheduler(engine, max_queue)
    limits = Limits(int(max_body_mb * 1024 ** 2), int(max_pixels_mp * 1e6), max_pages, allow_files)
    app = create_app(Server(scheduler, tokenizer, name, mode_of(mode, None if random_weights else model), limits, api_key, logprobs))
    where = listener.getsockname()
    warn(f"serving {name} on http://{where[0]}:{where[1]} (engine batch {engine.max_batch}; SIGTERM or Ctrl-C stops)")
    # keep-alive of 75 s, not uvicorn's 5: pooled clients (the openai client, --server) reuse idle
    # connections, and one closed as a request goes out on it ends that request with no answer
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=None,
                            timeout_keep_alive=75)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handlers it found:
    # these let the engine stop in order and the command exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        scheduler.close()
        engine.close()
    warn("stopped")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DsocrError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock
