"""CPU side of the engine: requests -> model inputs, in worker processes, a bounded number ahead.

Rendering a PDF page, resizing, padding and cutting tiles cost tens of milliseconds a page; done in
the GPU process they would starve it. A request's image may be a picklable callable that produces
the page (a PDF page reference, a synthetic page), so even rendering happens in the workers.
Workers return uint8 arrays (4x smaller than floats); normalisation happens on the device.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import torch

from ..preprocess import ImageInput, prepare_image
from ..prompts import PromptIds, build_prompt_ids
from ..requests import OcrRequest, page_image
from ..tokenizer import Tokenizer


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
        prepared = prepare_image(page, request.mode)
    except Exception as exc:  # a page that cannot be prepared fails alone, with its reason
        return f"{type(exc).__name__}: {exc}"
    tiles = prepared.tiles.numpy() if prepared.tiles is not None else None
    return prepared.global_view.numpy(), tiles, prepared.grid, prepared.token_count, page.size


def _assemble(request: OcrRequest, views, tokenizer: Tokenizer) -> Prepared:
    request = replace(request, image=None)  # the page is not kept while it waits: memory stays flat
    if isinstance(views, str):
        return Prepared(request, None, None, views)
    global_view, tiles, grid, count, size = views
    image = ImageInput(torch.from_numpy(global_view), torch.from_numpy(tiles) if tiles is not None else None,
                       grid, count)
    try:
        prompt = build_prompt_ids(tokenizer, request.prompt, count)
    except Exception as exc:
        return Prepared(request, None, None, str(exc), size)
    return Prepared(request, image, prompt, page_size=size)


DEPTH = 128  # requests prepared ahead by a worker pool

# A request iterator may yield PENDING: nothing to run yet, ask again later (pages handed out by
# another process). The feeder then stops pulling for now, without taking the iterator for done.
PENDING = object()


def _one_thread() -> None:
    """A worker prepares one page at a time: torch's default thread team per worker (a thread per core,
    spinning between copies) would take the cores the GPU process needs to launch kernels."""
    torch.set_num_threads(1)


def worker_pool(workers: int):
    """Spawned (not forked: the parent holds CUDA state) preprocessing workers; None for in-process."""
    return multiprocessing.get_context("spawn").Pool(workers, initializer=_one_thread) if workers > 0 else None


class Feeder:
    """Prepared requests in input order; with a worker pool, up to `depth` are prepared ahead.

    The pool belongs to the caller and outlives the feeder: starting spawned workers takes seconds.
    """

    def __init__(self, requests: Iterable[OcrRequest], tokenizer: Tokenizer, pool=None, depth: int = DEPTH):
        self.requests: Iterator[OcrRequest] = iter(requests)
        self.tokenizer = tokenizer
        self.depth = depth
        self.pool = pool
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
                self.ahead.append((request, self.pool.apply_async(_views, (request,))))

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
        while self.ahead and len(out) < n and (self.ahead[0][1].ready() or (wait and not out)):
            request, job = self.ahead.popleft()
            out.append(_assemble(request, job.get(), self.tokenizer))
            self._submit()
        return out
