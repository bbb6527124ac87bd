"""The server's scheduler in-process (no HTTP): per-request token limits, guard groups and cancellation
keep every page's greedy output what a run of its own gives (tiny fp32 model, CPU)."""
import queue
import threading
from dataclasses import replace

import pytest
import torch
from PIL import Image, ImageDraw

from dsocr_cli.checkpoint import load_model
from dsocr_cli.engine.engine import Engine
from dsocr_cli.preprocess import MODES
from dsocr_cli.prompts import load_prompt
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.requests import OcrRequest, OcrResult, settings_for, stronger_guard
from dsocr_cli.serve.bridge import guard_for
from dsocr_cli.serve.scheduler import Scheduler
from dsocr_cli.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def parts(tiny_checkpoint):
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    tokenizer = Tokenizer.bundled()
    return model, tokenizer, settings_for(tokenizer, max_new_tokens=16, ngram_size=3, ngram_window=20, loop_span=24)


def page(i: int) -> Image.Image:
    image = Image.new("RGB", (300 + 50 * i, 280), "white")
    ImageDraw.Draw(image).text((20, 20), f"page {i}", fill="black")
    return image


def request(i: int, limit=None) -> OcrRequest:
    return OcrRequest(page(i), load_prompt("free-ocr"), MODES["tiny"], key=i, max_new_tokens=limit)


def test_a_request_s_own_token_limit_equals_a_run_with_that_limit(parts):
    model, tokenizer, settings = parts
    engine = Engine(model, tokenizer, settings, max_batch=4)
    got = {r.key: r for r in engine.run([request(0, 5), request(1), request(2, 11)])}
    for i, limit in ((0, 5), (1, 16), (2, 11)):
        alone = PlainRunner(model, tokenizer, replace(settings, max_new_tokens=limit)).run_one(request(i))
        assert (got[i].token_ids, got[i].finish_reason) == (alone.token_ids, alone.finish_reason)


def test_requests_of_two_guards_each_get_their_own_guard_s_output(parts):
    model, tokenizer, settings = parts
    scheduler = Scheduler(Engine(model, tokenizer, settings, max_batch=4))
    other = guard_for(scheduler, ngram_size=2, ngram_window=30)
    guards = [other if i % 2 else scheduler.base for i in range(4)]  # interleaved: the groups alternate
    results: queue.Queue = queue.Queue()
    keys = {scheduler.submit(request(i), guards[i], results.put).request.key: i for i in range(4)}
    got = {keys[r.key]: r for r in (results.get(timeout=120) for _ in range(4))}
    scheduler.close(120)
    for i, guard in enumerate(guards):
        alone = PlainRunner(model, tokenizer, guard).run_one(request(i))
        assert (got[i].token_ids, got[i].finish_reason) == (alone.token_ids, alone.finish_reason)
    assert other != settings and scheduler.counters.pages == 4


def test_a_retry_under_the_server_s_guard_joins_the_server_s_group(parts):
    model, tokenizer, settings = parts
    scheduler = Scheduler(Engine(model, tokenizer, settings, max_batch=4))
    retry = stronger_guard(scheduler.base)
    tickets = [scheduler.submit(request(i), retry if i % 2 else scheduler.base, lambda result: None) for i in range(4)]
    assert [t.guard for t in tickets] == [scheduler.base] * 4 and [t.request.retry for t in tickets] == [False, True] * 2
    results: queue.Queue = queue.Queue()
    keys = {scheduler.submit(request(i), retry, results.put).request.key: i for i in range(2)}
    got = {keys[r.key]: r for r in (results.get(timeout=120) for _ in range(2))}
    scheduler.close(120)
    for i in range(2):
        alone = PlainRunner(model, tokenizer, retry).run_one(request(i))
        assert (got[i].token_ids, got[i].finish_reason) == (alone.token_ids, alone.finish_reason)


def test_a_cancelled_request_stops_at_its_next_token_and_frees_its_pages(parts):
    model, tokenizer, settings = parts
    engine = Engine(model, tokenizer, replace(settings, max_new_tokens=400, ngram_size=0, loop_span=0), max_batch=4)
    free = engine.pool.free_pages
    scheduler = Scheduler(engine)
    tokens: queue.Queue = queue.Queue()
    ticket = scheduler.submit(request(0), scheduler.base, tokens.put, stream=True)
    assert isinstance(tokens.get(timeout=120), int)  # it runs
    scheduler.cancel(ticket)
    done = threading.Event()
    later = scheduler.submit(request(1, 3), scheduler.base, lambda item: isinstance(item, OcrResult) and done.set())
    assert done.wait(120) and later.request.key not in scheduler.running
    scheduler.close(120)
    assert not scheduler.running and scheduler.counters.cancelled == 1
    assert engine.pool.free_pages == free and not engine.cancelled
    assert all(isinstance(item, int) for item in list(tokens.queue)) and tokens.qsize() < 399
