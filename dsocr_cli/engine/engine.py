"""The throughput engine: many pages in flight, admitted as others finish (continuous batching).

Each loop iteration admits waiting pages while KV pages and batch rows allow (vision for all of
them in a few large batches, then one packed prefill that also picks their first token), then runs
one decode step for every running page. A decode step is replayed from a CUDA graph captured for
the next batch-size bucket; all per-row state (last token, position, block table, token history)
lives on the device and the step updates it in place, so the host only reads the new tokens,
finishes rows and hands out pages. Greedy output equals the plain path (generate.py) token for
token in fp32 (tested); the repetition guard and loop detector run vectorised on the device.
With compile=True the step is built by torch.compile first (slower start, faster steps).
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch

from ..errors import DsocrError
from ..generate import finish_reason
from ..model.ocr import DeepseekOCR
from ..preprocess import normalize
from ..requests import GenerationSettings, OcrRequest, OcrResult, TokenCallback, decode_output
from ..tokenizer import Tokenizer
from .feeder import Feeder, Prepared, worker_pool
from .guard import ban_repeated_ngrams, looping
from .paged_kv import PAGE, DecodeKV, PagePool, PrefillKV, decode_backend_for, pages_for

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
MAX_PROMPT = 2048            # longest prompt expected: gundam 3 x 3 tiles is 1,203 vision tokens
PREFILL_TOKENS = 16384       # tokens per packed prefill
VISION_PIXELS = 8 * 1024 ** 2  # pixels per vision batch (SAM's global attention bias grows with N^2)


def compiled_step(step: Callable[[int], None]) -> Callable[[int], None]:
    """The decode step through torch.compile: Inductor fuses the ~900 small kernels of a step (norms,
    rotary embedding, routing, the guard) into far fewer, and kernel count is what bounds a small
    batch. Shapes are dynamic, so the batch-size buckets share a compilation or two instead of one
    each; fused kernels still round to bf16 where the eager ones do (emulate_precision_casts). Greedy
    output equals the plain path's in fp32 (tested on CPU and GPU)."""
    import torch._dynamo
    import torch._inductor.config

    torch._inductor.config.emulate_precision_casts = True
    torch._inductor.config.triton.coalesce_tiling_analysis = False  # asserts on some dynamic-shape kernels (torch 2.11)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(BUCKETS))
    return torch.compile(step, dynamic=True)


def _baked(settings: GenerationSettings) -> tuple:
    """The settings the decode step reads as constants (captured into its graphs)."""
    return settings.ngram_size, settings.ngram_window, settings.loop_span, settings.ngram_whitelist


@dataclass
class EngineStats:
    """Where the time went; wall-clock seconds (the host waits for each step's tokens anyway)."""
    steps: list[tuple[int, float]] = field(default_factory=list)  # (rows, seconds) per decode step
    prefills: int = 0
    prefill_seconds: float = 0.0    # vision + packed prefill + first tokens
    vision_images: int = 0          # global views + tiles encoded
    vision_seconds: float = 0.0     # measured with a device sync, only when timing=True
    first_token_at: list[float] = field(default_factory=list)  # seconds since run() started, per page


def kv_budget(free: int, one_page_bytes: int) -> int:
    """KV cache bytes out of `free` GPU bytes: 85% less room for vision, prefill and graph buffers
    (6 GB, or 40% of what is free on a small GPU); an error when not even one page fits."""
    budget = int(free * 0.85) - min(6 * 1024 ** 3, int(free * 0.4))
    if budget < one_page_bytes:
        raise DsocrError(f"the GPU has {free / 1024 ** 3:.1f} GB free, too little for one page's KV cache "
                         f"({one_page_bytes / 1024 ** 3:.2f} GB); free GPU memory or lower --max-new-tokens")
    return budget


@dataclass
class Sequence:
    prepared: Prepared
    order: int                       # admission order: the youngest is preempted first
    pages: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.prepared.prompt.ids)

    @property
    def position(self) -> int:
        """Position of the next input token (the last generated one)."""
        return self.prompt_len + len(self.generated) - 1


class Engine:
    """A Runner (requests.py) over one model on one device."""
    engines = 1
    devices: list[str] = []       # one engine in this process: the command's page count says it all
    pages_done: list[int] = []

    def __init__(self, model: DeepseekOCR, tokenizer: Tokenizer, settings: GenerationSettings, *,
                 max_batch: int | None = None, logprobs: bool = False, graphs: bool | None = None,
                 kv_bytes: int | None = None, workers: int = 0, timing: bool = False, compile: bool = False):
        self.model, self.tokenizer, self.settings, self.logprobs = model, tokenizer, settings, logprobs
        self.live = settings      # what the state, the captured steps and the running pages follow
        self.device = model.lm_head.weight.device
        self.eos = model.config.decoder.eos_token_id
        self.workers = workers
        self.worker_pool = None
        self.timing = timing
        self.stats = EngineStats()
        self.on_token: Callable[[object, int], None] | None = None
        self.use_triton = decode_backend_for(self.device)
        self.use_graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.device.type == "cuda":
            # cuDNN attention builds an execution plan for every new shape (hundreds of ms each); vision
            # batch sizes and prefill lengths change all the time, so it planned more than it computed.
            # Flash attention needs no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        dec = model.config.decoder
        dtype = model.lm_head.weight.dtype
        page_bytes = PagePool.bytes_per_page(dec.num_hidden_layers, dec.num_attention_heads, dec.head_dim, dtype)
        self.table_width = pages_for(MAX_PROMPT + settings.max_new_tokens)
        num_pages = max(2, (kv_bytes or self._kv_budget(page_bytes)) // page_bytes)
        if max_batch:  # a bounded batch never needs more than full page tables for every row
            num_pages = min(num_pages, max_batch * self.table_width + 1)
        self.pool = PagePool(dec.num_hidden_layers, dec.num_attention_heads, dec.head_dim, num_pages, dtype, self.device)
        typical = pages_for(1024 + min(settings.max_new_tokens, 1500))
        self.max_batch = max_batch or max(1, min(256, (num_pages - 1) // typical))
        self._init_state()
        self.compiled = compile
        self.step_fn = compiled_step(self._step) if compile else self._step
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if self.use_graphs:
            self._capture_graphs()

    # ---- set-up -------------------------------------------------------------------------------

    def _kv_budget(self, page_bytes: int) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return kv_budget(free, (self.table_width + 1) * page_bytes)
        return 512 * 1024 ** 2

    def _init_state(self) -> None:
        rows, dev = self.max_batch, self.device
        width = max(self.live.ngram_window, self.live.loop_span, 1)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.positions = torch.zeros(rows, dtype=torch.long, device=dev)
        self.active = torch.zeros(rows, dtype=torch.long, device=dev)
        self.tables = torch.zeros(rows, self.table_width, dtype=torch.int32, device=dev)
        self.history = torch.full((rows, width), -1, dtype=torch.long, device=dev)
        self.loop_flags = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.step_logprobs = torch.zeros(rows, dtype=torch.float32, device=dev)
        allowed = torch.zeros(self.model.config.decoder.vocab_size, dtype=torch.bool)
        allowed[list(self.live.ngram_whitelist)] = True
        self.allowed = allowed.to(dev)
        self.rows: list[Sequence] = []
        self.preemptions = 0

    def _use_settings(self, settings: GenerationSettings) -> None:
        """The guard's sizes and whitelist are baked into the state and captured steps: only a change
        to them means new state and graphs; a run with other limits reuses what is there."""
        if settings.max_new_tokens > self.settings.max_new_tokens:
            raise ValueError("an engine's max_new_tokens can only shrink (its page tables are sized for it)")
        baked = _baked(settings) != _baked(self.live)
        self.live = settings
        if baked:
            self._init_state()
            if self.graphs:
                self.graphs = {}
                self._capture_graphs()

    @torch.inference_mode()
    def _capture_graphs(self) -> None:
        """One CUDA graph per batch-size bucket, captured while every row is inactive (rows write
        to the scratch page and keep position 0), largest first so they share one memory pool."""
        pool = torch.cuda.graph_pool_handle()
        buckets = [b for b in BUCKETS if b < self.max_batch] + [self.max_batch]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for b in buckets:
                self.step_fn(b)  # warm-up: kernels compiled and autotuned outside the capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        for b in sorted(buckets, reverse=True):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.step_fn(b)
            self.graphs[b] = graph
        torch.cuda.synchronize(self.device)

    # ---- the decode step (captured) -------------------------------------------------------------

    def _step(self, b: int) -> None:
        s = self.live
        positions = self.positions[:b]
        x = self.model.embed(self.tokens[:b, None])
        kv = DecodeKV(self.pool, self.tables[:b], positions, self.use_triton)
        logits = self.model.logits(self.model.decode(x, positions[:, None], kv)[:, 0])
        pick = ban_repeated_ngrams(logits, self.history[:b], s.ngram_size, s.ngram_window, self.allowed)
        nxt = pick.argmax(dim=-1)
        if self.logprobs:
            self.step_logprobs[:b] = torch.log_softmax(logits, dim=-1).gather(1, nxt[:, None])[:, 0]
        self.tokens[:b] = nxt
        self.history[:b] = torch.cat([self.history[:b, 1:], nxt[:, None]], dim=1)
        self.loop_flags[:b] = looping(self.history[:b], s.loop_span)
        self.positions[:b] = positions + self.active[:b]

    def _bucket(self, n: int) -> int:
        return next(b for b in sorted(self.graphs) if b >= n) if self.graphs else n

    # ---- the loop -------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None) -> Iterator[OcrResult]:
        """Results as pages finish (not in input order); each carries its request's key.
        `settings` apply to this run only (a retry's stronger guard); without, the engine's own;
        `on_token(key, token)` sees every generated token as it comes (streaming)."""
        self._use_settings(settings or self.settings)
        self.on_token = on_token
        self.started = time.perf_counter()
        if self.workers and self.worker_pool is None:
            self.worker_pool = worker_pool(self.workers)
        feeder = Feeder(requests, self.tokenizer, self.worker_pool)
        waiting: deque[Prepared] = deque()
        counter = itertools.count()
        try:
            while True:
                # keep a batch worth of prepared pages waiting; block only when the GPU has nothing to do
                idle = not (waiting or self.rows)
                for item in feeder.take(self.max_batch - len(waiting), wait=idle):
                    if item.error:
                        yield OcrResult(item.request.key, "", [], "error", 0, 0, error=item.error,
                                        page_size=item.page_size)
                    else:
                        waiting.append(item)
                if not (waiting or self.rows):
                    if feeder.done:
                        return
                    continue
                yield from self._admit(waiting, counter)
                if self.rows:
                    yield from self._decode(waiting)
        finally:
            self._abandon()

    def _admit(self, waiting: deque[Prepared], counter) -> Iterator[OcrResult]:
        free_rows = self.max_batch - len(self.rows)
        if not waiting or (self.rows and free_rows < max(1, self.max_batch // 16)):
            return  # admit in groups: each prefill reads every expert's weights once
        group: list[Sequence] = []
        tokens = 0
        reserve = len(self.rows) // 4  # pages kept back for running rows to grow into
        while waiting and len(group) < free_rows:
            prepared = waiting[0]
            need = pages_for(len(prepared.prompt.ids) + 1)
            if group and tokens + len(prepared.prompt.ids) > PREFILL_TOKENS:
                break
            longest = pages_for(min(len(prepared.prompt.ids) + self.live.max_new_tokens,
                                    self.model.config.decoder.max_position_embeddings))
            # a page that could not finish even with the whole pool to itself would loop forever
            if longest > min(self.pool.num_pages - 1, self.table_width):
                waiting.popleft()
                yield OcrResult(prepared.request.key, "", [], "error", len(prepared.prompt.ids),
                                prepared.image.token_count, error="prompt too long for the KV cache",
                                page_size=prepared.page_size)
                continue
            if self.pool.free_pages < need + reserve:
                break
            waiting.popleft()
            group.append(Sequence(prepared, next(counter), self.pool.allocate(need)))
            tokens += len(prepared.prompt.ids)
        if group:
            yield from self._prefill(group)

    def _prefill(self, group: list[Sequence]) -> Iterator[OcrResult]:
        """Vision for the whole group, one packed decoder pass, first tokens; then the group joins."""
        start = time.perf_counter()
        embeds = self._vision(group)
        dev = self.device
        ids = torch.tensor([i for q in group for i in q.prepared.prompt.ids], device=dev)
        mask = torch.tensor([m for q in group for m in q.prepared.prompt.image_mask], device=dev)
        lengths = [q.prompt_len for q in group]
        positions = torch.cat([torch.arange(n, device=dev) for n in lengths])
        slots = torch.cat([self._slots(q.pages, n) for q, n in zip(group, lengths)])
        x = self.model.embed(ids[None], mask[None], torch.cat(embeds))
        hidden = self.model.decode(x, positions[None], PrefillKV(self.pool, lengths, slots))
        ends = torch.tensor(lengths, device=dev).cumsum(0) - 1
        logits = self.model.logits(hidden[0, ends])
        first = logits.argmax(dim=-1)  # nothing generated yet: the guard bans nothing
        scores = torch.log_softmax(logits, dim=-1).gather(1, first[:, None])[:, 0].tolist() if self.logprobs else None
        first = first.tolist()
        now = time.perf_counter()
        self.stats.prefills += 1
        self.stats.prefill_seconds += now - start
        self.stats.first_token_at += [now - self.started] * len(group)
        for i, (seq, token) in enumerate(zip(group, first)):
            self._append(seq, token, scores[i] if scores else None)
            done = finish_reason(seq.generated, self.eos, self.live, False, self._context_left(seq))
            if done:
                yield self._finish(seq, done)
            else:
                self._add_row(seq)

    def _vision(self, group: list[Sequence]) -> list[torch.Tensor]:
        """Vision embeddings per sequence; views of one size and all tiles run in large batches."""
        start = time.perf_counter()
        images = [q.prepared.image for q in group]
        globals_by_side: dict[int, list[int]] = {}
        for i, image in enumerate(images):
            globals_by_side.setdefault(image.global_view.shape[-1], []).append(i)
        global_features: dict[int, torch.Tensor] = {}
        for side, members in globals_by_side.items():
            feats = self._encode([images[i].global_view for i in members])
            global_features.update(zip(members, feats))
        tile_lists = [image.tiles for image in images if image.tiles is not None]
        tile_features = iter(self._encode([t for tiles in tile_lists for t in tiles]) if tile_lists else [])
        out = []
        for i, image in enumerate(images):
            tiles = None
            if image.tiles is not None:
                tiles = torch.stack([next(tile_features) for _ in range(image.tiles.shape[0])])
            out.append(self.model.image_embeddings(global_features[i], tiles, image.grid))
        self.stats.vision_images += len(images) + sum(len(t) for t in tile_lists)
        if self.timing:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stats.vision_seconds += time.perf_counter() - start
        return out

    def _encode(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        side = views[0].shape[-1]
        chunk = max(1, VISION_PIXELS // (side * side))
        feats = []
        for start in range(0, len(views), chunk):
            batch = torch.stack(views[start:start + chunk]).to(self.device, non_blocking=True)
            feats.extend(self.model.encode_views(normalize(batch)))
        return feats

    def _slots(self, pages: list[int], n: int) -> torch.Tensor:
        t = torch.arange(n)
        return (torch.tensor(pages)[t // PAGE] * PAGE + t % PAGE).to(self.device)

    # ---- rows -----------------------------------------------------------------------------------

    def _add_row(self, seq: Sequence) -> None:
        row = len(self.rows)
        self.rows.append(seq)
        width = self.history.shape[1]
        history = torch.full((width,), -1, dtype=torch.long)
        history[-1] = seq.generated[-1]
        table = torch.zeros(self.table_width, dtype=torch.int32)
        table[:len(seq.pages)] = torch.tensor(seq.pages, dtype=torch.int32)
        self.tokens[row] = seq.generated[-1]
        self.positions[row] = seq.position
        self.active[row] = 1
        self.tables[row] = table.to(self.device)
        self.history[row] = history.to(self.device)

    def _remove_rows(self, rows: list[int]) -> None:
        """Drop finished rows, moving the last rows into the holes so the batch stays dense."""
        doomed = set(rows)
        keep = [i for i in range(len(self.rows)) if i not in doomed]
        n = len(keep)
        moves = [(src, dst) for dst, src in enumerate(keep) if src != dst]
        if moves:
            src = torch.tensor([m[0] for m in moves], device=self.device)
            dst = torch.tensor([m[1] for m in moves], device=self.device)
            for state in (self.tokens, self.positions, self.tables, self.history):
                state[dst] = state[src]
        self.rows = [self.rows[i] for i in keep]
        freed = slice(n, n + len(doomed))
        self.active[freed] = 0
        self.positions[freed] = 0
        self.tables[freed] = 0
        self.history[freed] = -1

    def _abandon(self) -> None:
        """A run left early (the caller stopped reading): free what its pages held for the next run."""
        for seq in self.rows:
            self.pool.release(seq.pages)
        self._remove_rows(list(range(len(self.rows))))

    def close(self) -> None:
        """Stop the preprocessing workers (they are kept between runs: starting them takes seconds)."""
        if self.worker_pool is not None:
            self.worker_pool.terminate()
            self.worker_pool = None

    def _grow_pages(self, waiting: deque[Prepared]) -> None:
        """Give a page to every row whose next token starts one; preempt the youngest when short."""
        while True:
            needy = [i for i, seq in enumerate(self.rows) if seq.position // PAGE >= len(seq.pages)]
            if len(needy) <= self.pool.free_pages:
                break
            self._preempt(max(range(len(self.rows)), key=lambda i: self.rows[i].order), waiting)
        if not needy:
            return
        pages = self.pool.allocate(len(needy))
        cols = []
        for row, page in zip(needy, pages):
            self.rows[row].pages.append(page)
            cols.append(len(self.rows[row].pages) - 1)
        index = torch.tensor(needy, device=self.device), torch.tensor(cols, device=self.device)
        self.tables[index] = torch.tensor(pages, dtype=torch.int32, device=self.device)

    def _preempt(self, row: int, waiting: deque[Prepared]) -> None:
        """Free a row's pages and queue its page again from scratch (greedy: same result)."""
        seq = self.rows[row]
        self.preemptions += 1
        self.pool.release(seq.pages)
        self._remove_rows([row])
        waiting.appendleft(seq.prepared)

    def _decode(self, waiting: deque[Prepared]) -> Iterator[OcrResult]:
        self._grow_pages(waiting)
        n = len(self.rows)
        if n == 0:
            return
        b = self._bucket(n)
        start = time.perf_counter()
        if self.graphs:
            self.graphs[b].replay()
        else:
            self.step_fn(b)
        tokens = self.tokens[:n].tolist()
        loops = self.loop_flags[:n].tolist()
        scores = self.step_logprobs[:n].tolist() if self.logprobs else None
        self.stats.steps.append((n, time.perf_counter() - start))
        done_rows = []
        for i, seq in enumerate(self.rows):
            self._append(seq, tokens[i], scores[i] if scores else None)
            done = finish_reason(seq.generated, self.eos, self.live, loops[i], self._context_left(seq))
            if done:
                done_rows.append(i)
                yield self._finish(seq, done)
        if done_rows:
            self._remove_rows(done_rows)

    def _context_left(self, seq: Sequence) -> int:
        return self.model.config.decoder.max_position_embeddings - seq.prompt_len

    def _append(self, seq: Sequence, token: int, logprob: float | None) -> None:
        seq.generated.append(token)
        if logprob is not None:
            seq.logprobs.append(logprob)
        if self.on_token is not None:
            self.on_token(seq.prepared.request.key, token)

    def _finish(self, seq: Sequence, reason: str) -> OcrResult:
        self.pool.release(seq.pages)
        seq.pages = []
        request = seq.prepared.request
        return OcrResult(request.key, decode_output(self.tokenizer, seq.generated), seq.generated, reason,
                         seq.prompt_len, seq.prepared.image.token_count, seq.logprobs if self.logprobs else None,
                         page_size=seq.prepared.page_size)
