"""Preprocessing workers are watched: a worker that dies or sticks costs its page at most, never
the run. Real spawned workers (pebble), pages made by callables that misbehave in the worker."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from dsocr_cli.engine.feeder import Feeder, close_pool, worker_pool
from dsocr_cli.preprocess import MODES, prepare_image
from dsocr_cli.requests import OcrRequest
from dsocr_cli.tokenizer import Tokenizer


class Page:
    """A page made in the worker: `kill` kills the worker (once when `once` names a marker file
    that is not there yet, else always), `hang` sleeps far past any limit."""

    def __init__(self, fault: str | None = None, once: Path | None = None, size: tuple[int, int] = (64, 48)):
        self.fault, self.once, self.size = fault, once, size

    def __call__(self) -> Image.Image:
        if self.fault == "kill" and (self.once is None or not self.once.exists()):
            if self.once is not None:
                self.once.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault == "hang":
            time.sleep(600)
        image = Image.new("RGB", self.size, "white")
        image.paste((200, 30, 90), (5, 7, self.size[0] // 2, self.size[1] // 3))
        return image


def prepare(pages: list[Page], timeout: float = 120.0, mode: str = "tiny", then=None, workers: int = 2):
    """The pages prepared by the workers; with `then`, also what it returns when run in a worker after."""
    pool = worker_pool(workers)
    try:
        requests = [OcrRequest(page, "<image>\nFree OCR.", MODES[mode], key=i) for i, page in enumerate(pages)]
        feeder = Feeder(requests, Tokenizer.bundled(), pool, timeout=timeout)
        out = []
        while not feeder.done:
            out += feeder.take(8, wait=True)
        return out if then is None else (out, pool.schedule(then).result())
    finally:
        close_pool(pool)


def heavy_modules_loaded() -> list[str]:
    return sorted(name for name in ("torch", "triton", "rdkit") if name in sys.modules)


def test_workers_prepare_pages_without_importing_torch():
    """A worker's start is what a run's first page waits for: torch's import was most of it. (This
    module is imported by the workers too, to unpickle the pages: it imports torch only here.)"""
    import torch

    out, loaded = prepare([Page(size=(1500, 2000))], mode="gundam", then=heavy_modules_loaded,
                          workers=1)  # one worker: the check runs where the page was prepared
    assert loaded == []
    image = out[0].image
    assert image.global_view.dtype == torch.uint8 and tuple(image.global_view.shape) == (3, 1024, 1024)
    assert tuple(image.tiles.shape) == (6, 3, 640, 640) and image.grid == (2, 3)
    assert torch.equal(image.tiles, prepare_image(Page(size=(1500, 2000))(), MODES["gundam"]).tiles)


def test_a_worker_killed_once_costs_nothing_and_one_always_killed_fails_its_page_alone(tmp_path):
    started = time.monotonic()
    out = prepare([Page(), Page("kill", once=tmp_path / "killed"), Page(), Page("kill"), Page()])
    assert [p.request.key for p in out] == [0, 1, 2, 3, 4]
    assert [p.error is None for p in out] == [True, True, True, False, True]
    assert "preprocessing worker died preparing the page, 2 times (exit code -9)" in out[3].error
    assert out[1].page_size == (64, 48)
    assert time.monotonic() - started < 60


def test_a_stuck_worker_is_stopped_and_its_page_fails_with_the_reason():
    started = time.monotonic()
    out = prepare([Page(), Page("hang"), Page()], timeout=2)
    assert [p.error for p in out][0::2] == [None, None]
    assert out[1].error == "preparing the page took over 2 s: its worker was stopped"
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("cores,engines,expected", [(16, 1, 14), (64, 1, 16), (128, 8, 15), (2, 1, 0), (1, 1, 0)])
def test_a_gpu_engine_gets_the_hosts_cores_but_two_for_workers_at_most_sixteen(monkeypatch, cores, engines, expected):
    from dsocr_cli import runner
    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    assert runner.preprocess_workers("cuda", engines) == expected
