"""CPU side of the engine: requests -> model inputs, in worker processes, a bounded number ahead.

Rendering a PDF page, resizing, padding and cutting tiles cost tens of milliseconds a page; done in
the GPU process they would starve it. A request's image may be a picklable callable that produces
the page (a PDF page reference, a synthetic page), so even rendering happens in the workers.
Workers return uint8 arrays (4x smaller than floats); normalisation happens on the device. This
module (what a spawned worker imports to run `_views`) imports no torch: a worker's start is what
the first page of a run waits for, and importing torch was most of it.

The workers are watched (pebble's ProcessPool): a worker that dies (the OOM killer, a crash in
MuPDF) fails only the page it held, which is prepared once more in a fresh worker before it fails
with that reason; a page still being prepared after PAGE_TIMEOUT_S has its worker stopped and
fails. Either way the run goes on, and workers exit when their parent does (lifeline.py).
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
from collections import deque
from concurrent.futures import TimeoutError as PageTimeout  # the builtin TimeoutError only from 3.11
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from pebble import ProcessExpired, ProcessPool

from ..preprocess import ImageInput, image_input, prepare_arrays
from ..prompts import PromptIds, build_prompt_ids
from ..requests import PENDING, OcrRequest, page_image
from ..tokenizer import Tokenizer
from .lifeline import exit_with_parent


@dataclass
class Prepared:
    request: OcrRequest
    image: ImageInput | None
    prompt: PromptIds | None
    error: str | None = None
    page_size: tuple[int, int] | None = None


def _views(request: OcrRequest):
    """Worker side: numpy views (pickle cheaply) or an error message."""
    try:
        page = page_image(request)
        arrays = prepare_arrays(page, request.mode)
    except Exception as exc:  # a page that cannot be prepared fails alone, with its reason
        return f"{type(exc).__name__}: {exc}"
    return arrays, page.size


def _assemble(request: OcrRequest, views, tokenizer: Tokenizer) -> Prepared:
    request = replace(request, image=None)  # the page is not kept while it waits: memory stays flat
    if isinstance(views, str):
        return Prepared(request, None, None, views)
    arrays, size = views
    image = image_input(arrays)
    try:
        prompt = build_prompt_ids(tokenizer, request.prompt, arrays.token_count)
    except Exception as exc:
        return Prepared(request, None, None, str(exc), size)
    return Prepared(request, image, prompt, page_size=size)


DEPTH = 128  # requests prepared ahead by a worker pool
PAGE_TIMEOUT_S = 120.0  # most seconds a worker may take over one page (rendering it included)
ATTEMPTS = 2            # a page whose worker dies is prepared this many times before it fails


def _start_worker(parent: int) -> None:
    exit_with_parent(parent)
    importlib.import_module("pymupdf")  # now, not with the worker's first PDF page (0.35 s on a 2-core host)


def worker_pool(workers: int) -> ProcessPool | None:
    """Spawned (not forked: the parent holds CUDA state) preprocessing workers; None for in-process."""
    if workers <= 0:
        return None
    return ProcessPool(workers, initializer=_start_worker, initargs=(os.getpid(),),
                       context=multiprocessing.get_context("spawn"))


def close_pool(pool: ProcessPool) -> None:
    """Stop the workers, those busy included, and wait for them to be gone."""
    pool.stop()
    pool.join()


class Feeder:
    """Prepared requests in input order; with a worker pool, up to `depth` are prepared ahead. At
    PENDING (requests.py) it stops pulling for now, without taking the iterator for done.

    The pool belongs to the caller and outlives the feeder: starting spawned workers takes seconds.
    """

    def __init__(self, requests: Iterable[OcrRequest], tokenizer: Tokenizer, pool: ProcessPool | None = None,
                 depth: int = DEPTH, timeout: float = PAGE_TIMEOUT_S):
        self.requests: Iterator[OcrRequest] = iter(requests)
        self.tokenizer = tokenizer
        self.depth = depth
        self.pool = pool
        self.timeout = timeout
        self.ahead: deque = deque()
        self.exhausted = False

    @property
    def done(self) -> bool:
        return self.exhausted and not self.ahead

    def _submit(self) -> None:
        while not self.exhausted and len(self.ahead) < self.depth:
            request = next(self.requests, None)
            if request is None:
                self.exhausted = True
            elif request is PENDING:
                return
            else:
                self.ahead.append((request, self._schedule(request), 1))

    def _schedule(self, request: OcrRequest):
        return self.pool.schedule(_views, (request,), timeout=self.timeout)

    def take(self, n: int, wait: bool) -> list[Prepared]:
        """Up to n prepared requests that are ready now; with `wait`, block for at least one."""
        out: list[Prepared] = []
        if self.pool is None:
            while len(out) < n:
                request = next(self.requests, None)
                if request is None:
                    self.exhausted = True
                if request is None or request is PENDING:
                    break
                out.append(_assemble(request, _views(request), self.tokenizer))
            return out
        self._submit()
        while self.ahead and len(out) < n and (self.ahead[0][1].done() or (wait and not out)):
            request, job, attempt = self.ahead.popleft()
            try:
                views = job.result()
            except PageTimeout:
                views = f"preparing the page took over {self.timeout:g} s: its worker was stopped"
            except ProcessExpired as exc:
                if attempt < ATTEMPTS:  # the worker may have died of something else (the OOM killer)
                    self.ahead.appendleft((request, self._schedule(request), attempt + 1))
                    continue
                views = f"the preprocessing worker died preparing the page, {ATTEMPTS} times (exit code {exc.exitcode})"
            except Exception as exc:  # the pool itself broke: the page fails with the reason
                views = f"preprocessing failed: {type(exc).__name__}: {exc}"
            out.append(_assemble(request, views, self.tokenizer))
            self._submit()
        return out
