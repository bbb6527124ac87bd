"""CPU side of the engine: requests -> model inputs, in worker processes, a bounded number ahead.

Resizing, padding and tile cutting cost tens of milliseconds a page; done in the GPU process they
would starve it. Workers return uint8 arrays (4x smaller than floats); normalisation happens on the
device.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from ..preprocess import ImageInput, Mode, prepare_image
from ..prompts import PromptIds, build_prompt_ids
from ..runner import OcrRequest
from ..tokenizer import Tokenizer


@dataclass
class Prepared:
    request: OcrRequest
    image: ImageInput | None
    prompt: PromptIds | None
    error: str | None = None


def _views(image, mode: Mode):
    """Worker side: numpy views (pickle cheaply) or an error message."""
    try:
        prepared = prepare_image(image, mode)
    except Exception as exc:  # a page that cannot be prepared fails alone, with its reason
        return f"preprocessing failed: {exc}"
    tiles = prepared.tiles.numpy() if prepared.tiles is not None else None
    return prepared.global_view.numpy(), tiles, prepared.grid, prepared.token_count


def _assemble(request: OcrRequest, views, tokenizer: Tokenizer) -> Prepared:
    if isinstance(views, str):
        return Prepared(request, None, None, views)
    global_view, tiles, grid, count = views
    image = ImageInput(torch.from_numpy(global_view), torch.from_numpy(tiles) if tiles is not None else None,
                       grid, count)
    try:
        prompt = build_prompt_ids(tokenizer, request.prompt, count)
    except Exception as exc:
        return Prepared(request, None, None, str(exc))
    request.image = None  # the page image is no longer needed: keep memory flat over long batches
    return Prepared(request, image, prompt)


def prepared_stream(requests: Iterable[OcrRequest], tokenizer: Tokenizer, workers: int = 0,
                    depth: int = 64) -> Iterator[Prepared]:
    """Prepared requests in input order; with workers > 0, up to `depth` are prepared ahead."""
    if workers <= 0:
        for request in requests:
            yield _assemble(request, _views(request.image, request.mode), tokenizer)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        ahead: deque = deque()
        for request in requests:
            ahead.append((request, pool.apply_async(_views, (request.image, request.mode))))
            if len(ahead) >= depth:
                req, job = ahead.popleft()
                yield _assemble(req, job.get(), tokenizer)
        while ahead:
            req, job = ahead.popleft()
            yield _assemble(req, job.get(), tokenizer)
