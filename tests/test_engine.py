"""The engine must give the plain path's greedy output token for token (fp32, tiny model, CPU)."""
import random
from dataclasses import replace

import pytest
import torch
from PIL import Image, ImageDraw

from dsocr_cli.checkpoint import load_model
from dsocr_cli.engine.engine import Engine
from dsocr_cli.engine.guard import advance, ban_repeated_ngrams
from dsocr_cli.engine.paged_kv import PAGE
from dsocr_cli.generate import banned_tokens, is_looping
from dsocr_cli.preprocess import MODES
from dsocr_cli.prompts import load_prompt
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.requests import PENDING, OcrRequest, settings_for
from dsocr_cli.tokenizer import Tokenizer


def random_guard_rows(rng, rows=6, vocab=20, length=40):
    """Rows of tokens, each under its own n-gram size and window, some falling into loops."""
    out = []
    for _ in range(rows):
        size = rng.choice([0, 1, 2, 3, 4, 5])
        window = rng.choice([max(size, 1), size + 1, 6, 10, 30])
        seq = [rng.randint(0, rng.choice([2, 3, vocab - 1])) for _ in range(rng.randint(1, length))]
        if rng.random() < 0.3 and len(seq) > 6:
            seq = (seq[:3] * 20)[:len(seq)]
        out.append((size, window, seq))
    return out


def check_guard_against_plain(rng, ban, advance, device="cpu", cases=60):
    """Feed rows token by token through (ban, advance) and compare every step with generate.py's guard."""
    from dsocr_cli.engine.guard import guard_shape
    from dsocr_cli.requests import GenerationSettings

    vocab = 20
    for _ in range(cases):
        span = rng.choice([0, 3, 8, 16, 24])
        rows = random_guard_rows(rng)
        width, shifts = guard_shape([GenerationSettings(ngram_size=s, ngram_window=w, loop_span=span) for s, w, _ in rows])
        history = torch.full((len(rows), width), -1, device=device)
        runs = torch.zeros(len(rows), shifts, dtype=torch.int32, device=device)
        sizes = torch.tensor([s for s, _, _ in rows], dtype=torch.int32, device=device)
        windows = torch.tensor([w for _, w, _ in rows], dtype=torch.int32, device=device)
        whitelist = frozenset(rng.sample(range(vocab), 2))
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[list(whitelist)] = True
        allowed = allowed.to(device)
        steps = max(len(seq) for _, _, seq in rows)
        for t in range(steps + 1):
            logits = torch.zeros(len(rows), vocab, device=device)
            ban(logits, history, runs, sizes, windows, allowed)
            for r, (size, window, seq) in enumerate(rows):
                banned = {i for i in range(vocab) if logits[r, i] == float("-inf")}
                assert banned == banned_tokens(seq[:t], size, window, whitelist), (size, window, seq[:t])
            if t == steps:
                break
            token = torch.tensor([seq[t] if t < len(seq) else seq[-1] for _, _, seq in rows], device=device)
            loops = advance(history, runs, token, span).tolist()
            for r, (_, _, seq) in enumerate(rows):
                grown = seq[:t + 1] + [seq[-1]] * (t + 1 - len(seq))
                assert loops[r] == is_looping(grown, span), (span, grown)
                if t >= len(seq):
                    rows[r] = (rows[r][0], rows[r][1], grown)


def test_device_guard_equals_the_plain_guard_row_by_row_and_token_by_token():
    check_guard_against_plain(random.Random(0), ban_repeated_ngrams, advance)


@pytest.fixture(scope="module")
def eos_prone_model(tiny_checkpoint):
    """The tiny model with EOS made a near-copy of a token it likes, so pages end at various steps."""
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        model.lm_head.weight[1] = model.lm_head.weight[81417] * 1.001
    return model


def pages(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        image = Image.new("RGB", (rng.randint(300, 1400), rng.randint(300, 1400)), "white")
        ImageDraw.Draw(image).text((20, 20), f"page {i}", fill="black")
        out.append((image, rng.choice(["document", "free-ocr", "describe"]), rng.choice(list(MODES))))
    return out


def requests(specs, retry_every: int = 0):
    """Requests for the specs; with `retry_every`, every such one is a retry (the stronger guard)."""
    return [OcrRequest(image.copy(), load_prompt(prompt), MODES[mode], key=i, retry=bool(retry_every) and i % retry_every == 0)
            for i, (image, prompt, mode) in enumerate(specs)]


PAGE_BYTES = 2 * 2 * 64 * 2 * 32 * 4  # K and V, 2 layers, 64 slots, 2 heads of 32, fp32


@pytest.fixture(scope="module")
def plain_runs() -> dict:
    """The plain path's results per guard, shared by the cases that differ only in the engine's setup."""
    return {}


@pytest.mark.parametrize("guard,kv_pages,compile", [
    (dict(ngram_size=3, ngram_window=20, loop_span=24), 20, False),  # 20 pages for 4 rows: rows get preempted
    (dict(ngram_size=0, loop_span=12), 64, False),
    (dict(ngram_size=3, ngram_window=20, loop_span=24), 20, True),   # the decode step through torch.compile
])
def test_engine_matches_plain_path_over_a_mixed_batch(eos_prone_model, plain_runs, guard, kv_pages, compile):
    tok = Tokenizer.bundled()
    settings = settings_for(tok, max_new_tokens=48, **guard)
    specs = pages(9)
    key = tuple(sorted(guard.items()))
    if key not in plain_runs:
        plain_runs[key] = {r.key: r for r in PlainRunner(eos_prone_model, tok, settings, logprobs=True).run(requests(specs, 3))}
    plain = plain_runs[key]
    engine = Engine(eos_prone_model, tok, settings, max_batch=4, logprobs=True, kv_bytes=kv_pages * PAGE_BYTES,
                    compile=compile)
    batched = {r.key: r for r in engine.run(requests(specs, 3))}  # retries (every third) beside first attempts
    assert batched.keys() == plain.keys()
    for key, ref in plain.items():
        got = batched[key]
        assert got.token_ids == ref.token_ids and got.finish_reason == ref.finish_reason, key
        assert got.text == ref.text and got.prompt_tokens == ref.prompt_tokens
        assert max(abs(a - b) for a, b in zip(got.token_logprobs, ref.token_logprobs)) < 1e-4
    reasons = {r.finish_reason for r in plain.values()}
    assert "length" in reasons and "eos" in reasons and (guard["ngram_size"] or "repetition" in reasons)
    assert (engine.preemptions > 0) == (kv_pages == 20)


def test_engine_keeps_its_workers_and_recovers_from_an_abandoned_run(eos_prone_model):
    """Worker processes serve several runs; a run the caller stops reading frees its KV pages."""
    tok = Tokenizer.bundled()
    settings = settings_for(tok, max_new_tokens=24, ngram_size=0)
    specs = pages(4, seed=1)
    engine = Engine(eos_prone_model, tok, settings, max_batch=2, workers=1, kv_bytes=64 * PAGE_BYTES)
    try:
        first = {r.key: r.token_ids for r in engine.run(requests(specs))}
        pool = engine.worker_pool
        free = engine.pool.free_pages
        partial = engine.run(requests(specs))
        next(partial)
        partial.close()  # stop reading mid-run
        assert engine.pool.free_pages == free and not engine.rows and not engine.encoded
        again = {r.key: r.token_ids for r in engine.run(requests(specs))}
        assert engine.worker_pool is pool and again == first
    finally:
        engine.close()


def test_engine_switches_settings_between_runs_like_the_plain_path(eos_prone_model):
    """A retry pass runs with a stronger guard on the same engine: its output is the plain path's."""
    tok = Tokenizer.bundled()
    loose = settings_for(tok, max_new_tokens=32, ngram_size=0)
    strict = settings_for(tok, max_new_tokens=32, ngram_size=2, ngram_window=16)
    specs = pages(3, seed=2)
    engine = Engine(eos_prone_model, tok, loose, max_batch=2, kv_bytes=64 * PAGE_BYTES)
    for settings in (strict, loose):
        plain = {r.key: r.token_ids for r in PlainRunner(eos_prone_model, tok, settings).run(requests(specs))}
        got = {r.key: (r.token_ids, r.page_size) for r in engine.run(requests(specs), settings=settings)}
        assert {k: ids for k, (ids, _) in got.items()} == plain
        assert all(size == specs[k][0].size for k, (_, size) in got.items())


def test_a_compiled_engine_steps_eagerly_after_a_guard_change(eos_prone_model):
    """Recompiling for a retry pass's new state failed in Inductor on the H200: the step goes eager."""
    tok = Tokenizer.bundled()
    loose = settings_for(tok, max_new_tokens=32, ngram_size=0)
    engine = Engine(eos_prone_model, tok, loose, max_batch=2, kv_bytes=64 * PAGE_BYTES, compile=True)
    compiled = engine.step_fn
    engine._use_settings(replace(loose, max_new_tokens=16))  # a shorter limit: nothing baked changes
    assert engine.step_fn is compiled
    engine._use_settings(settings_for(tok, max_new_tokens=32, ngram_size=2, ngram_window=16))
    assert engine.step_fn == engine._step


def test_settings_given_to_a_run_hold_for_that_run_only(eos_prone_model):
    """After a strict run, a run given no settings is the engine's own again (the plain path's)."""
    tok = Tokenizer.bundled()
    loose = settings_for(tok, max_new_tokens=32, ngram_size=0)
    strict = settings_for(tok, max_new_tokens=32, ngram_size=2, ngram_window=16)
    specs = pages(2, seed=2)
    engine = Engine(eos_prone_model, tok, loose, max_batch=2, kv_bytes=64 * PAGE_BYTES)
    list(engine.run(requests(specs), settings=strict))
    assert engine.settings == loose
    plain = {r.key: r.token_ids for r in PlainRunner(eos_prone_model, tok, loose).run(requests(specs))}
    assert {r.key: r.token_ids for r in engine.run(requests(specs))} == plain


def test_the_feeder_leaves_the_callers_requests_alone(eos_prone_model):
    tok = Tokenizer.bundled()
    engine = Engine(eos_prone_model, tok, settings_for(tok, max_new_tokens=4), max_batch=2, kv_bytes=64 * PAGE_BYTES)
    mine = list(requests(pages(2, seed=3)))
    images = [r.image for r in mine]
    list(engine.run(mine))
    assert all(r.image is image for r, image in zip(mine, images))


def test_a_bounded_batch_takes_only_the_cache_it_can_use(eos_prone_model):
    settings = settings_for(Tokenizer.bundled(), max_new_tokens=64)
    engine = Engine(eos_prone_model, Tokenizer.bundled(), settings, max_batch=2)
    assert engine.pool.num_pages == 2 * engine.table_width + 1


def test_a_small_run_gets_a_batch_and_cache_its_size(tiny_checkpoint):
    from dsocr_cli.runner import load_runner
    runner = load_runner(str(tiny_checkpoint), "cpu", "fp32", pages=3, max_new_tokens=16)
    assert runner.max_batch == 3 and runner.pool.num_pages == 3 * runner.table_width + 1


def test_compile_reaches_the_engine_from_convert(tiny_checkpoint, dsocr, monkeypatch, tmp_path):
    """convert --compile asks for a compiling engine (here built plain: the compiled step has its own test)."""
    from dsocr_cli import runner
    from dsocr_cli.runner import load_runner
    asked = []

    def spy(*args, compile, **kwargs):
        asked.append(compile)
        return load_runner(*args, **kwargs)

    monkeypatch.setattr(runner, "load_runner", spy)  # the command imports it when it runs
    Image.new("RGB", (200, 100), "white").save(tmp_path / "page.png")
    outcome = dsocr("convert", tmp_path / "page.png", "-o", tmp_path / "out.md", "--model", tiny_checkpoint,
                    "--device", "cpu", "--max-new-tokens", "4", "--compile", "-q")
    assert outcome.code in (0, 1), outcome.stderr
    assert asked == [True]
    assert load_runner(str(tiny_checkpoint), "cpu", "fp32", pages=1, compile=True).compiled


def test_vision_batches_are_full_chunks_then_binary_parts():
    from dsocr_cli.engine.vision import batch_sizes
    assert batch_sizes(37, 640) == [16, 16, 4, 1]   # 8 Mpx / 640^2 = 20 -> chunks of 16
    assert batch_sizes(8, 1024) == [8] and batch_sizes(3, 1024) == [2, 1]
    assert batch_sizes(2, 4096) == [1, 1] and sum(batch_sizes(1000, 512)) == 1000


def test_the_last_pages_of_a_queue_join_as_rows_free_up(tiny_checkpoint):
    """Pages join in groups of a sixteenth of the batch, but a queue's last page joins as soon as a
    row is free, not once a whole wave of long pages has finished."""
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    tok = Tokenizer.bundled()
    engine = Engine(model, tok, settings_for(tok, max_new_tokens=40, ignore_eos=True), max_batch=32)
    image = Image.new("RGB", (200, 200), "white")
    queue = [OcrRequest(image.copy(), load_prompt("free-ocr"), MODES["tiny"], key=i) for i in range(33)]
    lengths = {i: 40 for i in range(33)} | {0: 2, 32: 3}  # one short page in the wave, one after it
    order = [r.key for r in engine.run(queue, output_lengths=lengths)]
    assert order.index(32) < order.index(1)  # it ran in the row page 0 left, beside the long ones


def test_an_unbounded_batch_runs_as_many_rows_as_the_prompts_leave_room_for(tiny_checkpoint):
    """Without a fixed batch the rows follow the prompts seen: short ones fill more rows of one KV
    cache than long ones, and none is preempted."""
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    tok = Tokenizer.bundled()
    image = Image.new("RGB", (400, 400), "white")
    peaks = {}
    for mode in ("tiny", "large"):
        engine = Engine(model, tok, settings_for(tok, max_new_tokens=8, ignore_eos=True), kv_bytes=40 * PAGE_BYTES)
        queue = [OcrRequest(image.copy(), load_prompt("free-ocr"), MODES[mode], key=i) for i in range(8)]
        assert len(list(engine.run(queue))) == 8
        peaks[mode] = max(rows for rows, _ in engine.stats.steps)
        assert engine.preemptions == 0
        prompt = engine.prompt_tokens_seen // engine.prompts_seen
        assert peaks[mode] <= engine.pool.num_pages // -(-(prompt + 8) // PAGE)
    assert peaks["tiny"] > peaks["large"] >= 2


def test_pages_that_trickle_in_beside_running_rows_share_prefills(tiny_checkpoint):
    """A server's pages arrive one at a time: beside running rows they wait a few steps for each
    other, so one prefill serves several, and none waits longer than PREFILL_WAIT steps."""
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    tok = Tokenizer.bundled()
    engine = Engine(model, tok, settings_for(tok, max_new_tokens=60, ignore_eos=True), max_batch=16)
    image = Image.new("RGB", (200, 200), "white")

    def trickle():  # a long page first, then one page every other loop of the engine
        for i in range(12):
            yield OcrRequest(image.copy(), load_prompt("free-ocr"), MODES["tiny"], key=i)
            yield from [PENDING] * (0 if i == 0 else 2)

    lengths = {0: 60} | {i: 8 for i in range(1, 12)}
    results = list(engine.run(trickle(), output_lengths=lengths))
    assert sorted(r.key for r in results) == list(range(12))
    assert all(len(r.token_ids) == lengths[r.key] for r in results)
    assert engine.stats.prefills <= 4  # one per page (12) before pages waited for each other
    assert results[-1].key == 0  # all joined and finished while the long page ran: none starved


def test_an_fp8_kv_cache_keeps_greedy_output_close_to_the_exact_path(eos_prone_model):
    """fp8 pages (3 mantissa bits) are not exact, but the tiny fp32 model must still read alike: most
    pages token for token, every page for its first tokens; and a page of cache is a quarter of fp32's."""
    tok = Tokenizer.bundled()
    settings = settings_for(tok, max_new_tokens=48)
    plain = {r.key: r.token_ids for r in PlainRunner(eos_prone_model, tok, settings).run(requests(pages(9)))}
    engine = Engine(eos_prone_model, tok, settings, max_batch=4, kv_bytes=20 * PAGE_BYTES, kv_dtype="fp8")
    assert engine.pool.k.dtype == torch.float8_e4m3fn and engine.pool.num_pages == 4 * 20
    fp8 = {r.key: r.token_ids for r in engine.run(requests(pages(9)))}
    assert sum(fp8[k] == plain[k] for k in plain) >= 6
    assert all(fp8[k][:5] == plain[k][:5] for k in plain)
