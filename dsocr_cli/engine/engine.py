"""The throughput engine: many pages in flight, admitted as others finish (continuous batching).

Each loop iteration admits encoded pages while KV pages and batch rows allow (one packed prefill
that also picks their first token), starts the vision of the next waiting pages (all views of a
group in a few large batches, on a stream of its own while running pages keep decoding, up to a
batch of pages ahead), then runs one decode step for every running page. A decode step is
replayed from a CUDA graph captured (the first time a run needs it) for the next batch-size
bucket; all per-row state (last token, position, block table, token history) lives on the device
and the step updates it in place, so the host only reads the new tokens, finishes rows and hands
out pages. The next step is launched before the host reads the last one's tokens, so the device
computes while the host handles rows: a row that finished has one step too many computed for it,
which is dropped, and pages are handed out a step ahead. Greedy output equals the plain path
(generate.py) token for token in fp32 (tested); the repetition guard and loop detector run on the
device (guard.py), each row under its own page's guard, so a retried page joins the live run.
With compile=True the step is built by torch.compile first (slower start, faster steps); with
kv_dtype="fp8" the KV cache holds fp8 (paged_kv.py): half the bytes read, output no longer exact.
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import torch

from ..errors import DsocrError
from ..generate import finish_reason
from ..model.eager import disable_marked
from ..model.ocr import DeepseekOCR
from ..requests import (GenerationSettings, OcrRequest, OcrResult, TokenCallback, decode_output, settings_of,
                        stronger_guard)
from ..tokenizer import Tokenizer
from .feeder import Feeder, Prepared, close_pool, worker_pool
from .guard import advance, ban_repeated_ngrams, guard_shape
from .paged_kv import PAGE, DecodeKV, PagePool, PrefillKV, decode_backend_for, kv_dtype_for, pages_for
from .vision import VisionEncoder, VisionJob

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
MAX_BATCH = 1024             # rows decoded together at most, where the KV cache has room for them
TYPICAL_OUTPUT = 1500        # tokens a page is expected to need when its limit allows more (most end sooner)
MAX_PROMPT = 2048            # longest prompt expected: gundam 3 x 3 tiles is 1,203 vision tokens
PREFILL_TOKENS = 16384       # tokens per packed prefill
MIN_PREFILL = 8              # pages a prefill beside running rows waits for, unless the oldest has waited
PREFILL_WAIT = 16            # ... this many decode steps
CANCELLED = "cancelled"


def compiled_step(step: Callable[[int], None]) -> Callable[[int], None]:
    """The decode step through torch.compile: Inductor fuses the ~900 small kernels of a step (norms,
    rotary embedding, routing, the guard) into far fewer, and kernel count is what bounds a small
    batch. Shapes are dynamic, so the batch-size buckets share a compilation or two instead of one
    each; fused kernels still round to bf16 where the eager ones do (emulate_precision_casts). Greedy
    output equals the plain path's in fp32 (tested on CPU and GPU)."""
    import torch._dynamo
    import torch._inductor.config

    disable_marked()
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
    vision_seconds: float = 0.0     # device time of vision (CUDA events on its stream; overlaps decode)
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
class Launched:
    """A decode step queued on the device: its rows as they were at launch (output i is rows[i]'s)
    and the host buffers its tokens are copied into."""
    rows: list[Sequence]
    tokens: torch.Tensor
    loops: torch.Tensor
    scores: torch.Tensor
    begin: torch.cuda.Event | None = None
    end: torch.cuda.Event | None = None
    seconds: float = 0.0

    def wait(self) -> float:
        """Block until the tokens are on the host; the step's device seconds."""
        if self.end is None:
            return self.seconds
        self.end.synchronize()
        return self.begin.elapsed_time(self.end) / 1000


@dataclass
class Sequence:
    prepared: Prepared
    order: int                       # admission order: the youngest is preempted first
    pages: list[int] = field(default_factory=list)
    settings: GenerationSettings | None = None  # the run's, or with a forced length (benchmarks)
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: bool = False               # finished or preempted: tokens of a step still in flight are dropped

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
    live_requests = True
    devices: list[str] = []       # one engine in this process: the command's page count says it all
    pages_done: list[int] = []

    def __init__(self, model: DeepseekOCR, tokenizer: Tokenizer, settings: GenerationSettings, *,
                 max_batch: int | None = None, logprobs: bool = False, graphs: bool | None = None,
                 kv_bytes: int | None = None, workers: int = 0, compile: bool = False, kv_dtype: str = "auto"):
        self.model, self.tokenizer, self.settings, self.logprobs = model, tokenizer, settings, logprobs
        self.live = settings      # what the state, the captured steps and the running pages follow
        self.device = model.lm_head.weight.device
        self.eos = model.config.decoder.eos_token_id
        self.workers = workers
        self.worker_pool = None
        self.stats = EngineStats()
        self.on_token: Callable[[object, int], None] | None = None
        self.cancelled: set = set()  # keys whose pages stop at their next token (cancel())
        self.output_lengths: dict = {}
        self.use_triton = decode_backend_for(self.device)
        self.use_graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.device.type == "cuda":
            # cuDNN attention builds an execution plan for every new shape (hundreds of ms each); vision
            # batch sizes and prefill lengths change all the time, so it planned more than it computed.
            # Flash attention needs no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        dec = model.config.decoder
        dtype = kv_dtype_for(kv_dtype, model.lm_head.weight.dtype)
        page_bytes = PagePool.bytes_per_page(dec.num_hidden_layers, dec.num_attention_heads, dec.head_dim, dtype)
        self.table_width = pages_for(MAX_PROMPT + settings.max_new_tokens)
        num_pages = max(2, (kv_bytes or self._kv_budget(page_bytes)) // page_bytes)
        if max_batch:  # a bounded batch never needs more than full page tables for every row
            num_pages = min(num_pages, max_batch * self.table_width + 1)
        self.pool = PagePool(dec.num_hidden_layers, dec.num_attention_heads, dec.head_dim, num_pages, dtype, self.device)
        # Rows: a fixed batch, or as many as the KV cache could hold (at the shortest prompts); how
        # many of those run is chosen from the prompts seen (_row_limit), so base pages (273-token
        # prompts) run about 1.5 times the rows of gundam pages (about 900) in the same cache.
        self.fixed_batch = bool(max_batch)
        self.max_batch = max_batch or max(1, min(MAX_BATCH, (num_pages - 1) // pages_for(self._expected_output(settings) + 1)))
        self.prompt_tokens_seen = self.prompts_seen = 0
        self.buckets = [b for b in BUCKETS if b < self.max_batch] + [self.max_batch]
        self._init_state()
        self.compiled = compile
        self.step_fn = compiled_step(self._step) if compile else self._step
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.vision = VisionEncoder(model, self.use_graphs)

    # ---- set-up -------------------------------------------------------------------------------

    @staticmethod
    def _expected_output(settings: GenerationSettings) -> int:
        return min(settings.max_new_tokens, TYPICAL_OUTPUT)

    def _row_limit(self) -> int:
        """Rows that may run at once: the fixed batch, or as many pages as the KV cache holds at the
        mean prompt seen so far plus the expected output."""
        if self.fixed_batch or not self.prompts_seen:
            return self.max_batch
        per_page = pages_for(self.prompt_tokens_seen // self.prompts_seen + self._expected_output(self.live))
        return max(1, min(self.max_batch, (self.pool.num_pages - 1) // per_page))

    def _kv_budget(self, page_bytes: int) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return kv_budget(free, (self.table_width + 1) * page_bytes)
        return 512 * 1024 ** 2

    def _init_state(self) -> None:
        rows, dev = self.max_batch, self.device
        # room for the run's guard and a retry's (stronger_guard), so retries can join a live run
        width, shifts = guard_shape([self.live, stronger_guard(self.live)])
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.positions = torch.zeros(rows, dtype=torch.long, device=dev)
        self.active = torch.zeros(rows, dtype=torch.long, device=dev)
        self.tables = torch.zeros(rows, self.table_width, dtype=torch.int32, device=dev)
        self.history = torch.full((rows, width), -1, dtype=torch.long, device=dev)
        self.runs = torch.zeros(rows, shifts, dtype=torch.int32, device=dev)
        self.ngram_sizes = torch.zeros(rows, dtype=torch.int32, device=dev)
        self.ngram_windows = torch.zeros(rows, dtype=torch.int32, device=dev)
        self.loop_flags = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.step_logprobs = torch.zeros(rows, dtype=torch.float32, device=dev)
        allowed = torch.zeros(self.model.config.decoder.vocab_size, dtype=torch.bool)
        allowed[list(self.live.ngram_whitelist)] = True
        self.allowed = allowed.to(dev)
        self.rows: list[Sequence] = []
        self.in_flight: Launched | None = None
        pinned = self.device.type == "cuda"
        # two sets of host buffers: one step's tokens are read while the next step's are copied
        self.host_outputs = [(torch.zeros(rows, dtype=torch.long, pin_memory=pinned),
                              torch.zeros(rows, dtype=torch.bool, pin_memory=pinned),
                              torch.zeros(rows, dtype=torch.float32, pin_memory=pinned)) for _ in range(2)]
        self.launches = 0
        # pages whose vision has been started, in order, each with its embeddings, their job and the
        # decode steps launched before it
        self.encoded: deque[tuple[Prepared, torch.Tensor, VisionJob, int]] = deque()
        self.last_vision: VisionJob | None = None
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
            self.graphs = {}  # captured again as the run needs them, in a new pool: the old one
            if self.use_graphs:  # is freed with its graphs, and capturing into it again fails
                self.graph_pool = torch.cuda.graph_pool_handle()
            # Recompiling the step for the new state failed inside Inductor on the H200 (torch 2.11:
            # "Expected !size_bytes_is_heap_allocated_"), so from here on it runs eager (still replayed
            # from CUDA graphs): a retry pass is a few pages.
            self.step_fn = self._step

    def _capture(self, b: int) -> None:
        """A CUDA graph of the decode step for bucket b, captured the first time a run needs it (a
        single page never pays for 512 rows). The eager step just taken for b was its warm-up;
        capturing records kernels without running them, so live rows are untouched. All graphs
        share one memory pool: they never run at once."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.graph_pool):
            self.step_fn(b)
        self.graphs[b] = graph

    # ---- the decode step (captured) -------------------------------------------------------------

    def _step(self, b: int) -> None:
        positions = self.positions[:b]
        x = self.model.embed(self.tokens[:b, None])
        kv = DecodeKV(self.pool, self.tables[:b], positions, self.use_triton)
        logits = self.model.logits(self.model.decode(x, positions[:, None], kv)[:, 0])
        scores = torch.log_softmax(logits, dim=-1) if self.logprobs else None  # before the guard's bans
        ban_repeated_ngrams(logits, self.history[:b], self.runs[:b], self.ngram_sizes[:b], self.ngram_windows[:b],
                            self.allowed)
        nxt = logits.argmax(dim=-1)
        if scores is not None:
            self.step_logprobs[:b] = scores.gather(1, nxt[:, None])[:, 0]
        self.tokens[:b] = nxt
        self.loop_flags[:b] = advance(self.history[:b], self.runs[:b], nxt, self.live.loop_span)
        self.positions[:b] = positions + self.active[:b]

    def _bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n) if self.use_graphs else n

    # ---- the loop -------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None, output_lengths: dict | None = None) -> Iterator[OcrResult]:
        """Results as pages finish (not in input order); each carries its request's key.
        `settings` apply to this run only (a retry's stronger guard); without, the engine's own;
        `on_token(key, token)` sees every generated token as it comes (streaming);
        `output_lengths` (key -> tokens) stops those pages at that length (benchmarks)."""
        self._use_settings(settings or self.settings)
        self.on_token = on_token
        self.output_lengths = output_lengths or {}
        self.started = time.perf_counter()
        if self.workers and self.worker_pool is None:
            self.worker_pool = worker_pool(self.workers)
        feeder = Feeder(requests, self.tokenizer, self.worker_pool)
        waiting: deque[Prepared] = deque()
        counter = itertools.count()
        try:
            while True:
                # keep a batch worth of prepared pages waiting; block only when the GPU has nothing to do
                idle = not (waiting or self.rows or self.encoded)
                for item in feeder.take(self.max_batch - len(waiting) - len(self.encoded), wait=idle):
                    if item.error:
                        yield OcrResult(item.request.key, "", [], "error", 0, 0, error=item.error,
                                        page_size=item.page_size)
                    else:
                        waiting.append(item)
                if not (waiting or self.rows or self.encoded):
                    if feeder.done:
                        return
                    continue
                yield from self._admit(counter)
                self._encode_ahead(waiting)
                if self.rows or self.in_flight:
                    yield from self._decode(waiting)
        finally:
            self._abandon()

    def _encode_ahead(self, waiting: deque[Prepared]) -> None:
        """Start the vision of the next waiting pages once the last group's is done, up to a batch of
        pages ahead of admission. On CUDA it runs on the vision stream beside decode, so when rows
        free up (a wave of pages finishing together) their successors are already encoded."""
        busy = self.last_vision is not None and not self.last_vision.ready()
        if busy or not waiting or len(self.encoded) >= self.max_batch:
            return
        group: list[Prepared] = []
        tokens = 0
        while waiting and len(self.encoded) + len(group) < self.max_batch:
            if group and tokens + len(waiting[0].prompt.ids) > PREFILL_TOKENS:
                break
            group.append(waiting.popleft())
            tokens += len(group[-1].prompt.ids)
        self.prompts_seen += len(group)
        self.prompt_tokens_seen += tokens
        images = [p.image for p in group]
        job = self.last_vision = self.vision.start(images)
        self.encoded.extend((prepared, embed, job, self.launches) for prepared, embed in zip(group, job.embeds))
        self.stats.vision_images += sum(1 + (len(i.tiles) if i.tiles is not None else 0) for i in images)

    def _admit(self, counter) -> Iterator[OcrResult]:
        """Prefill encoded pages while rows and KV pages allow. With rows decoding, only pages whose
        vision is done join (at a later step otherwise); with none, the device waits for vision.
        Pages join in groups (each prefill reads every expert's weights once), unless fewer are
        encoded: the last pages of a queue join at once rather than when a whole wave has finished.
        Pages that trickle in (a server's clients) wait for a few more, up to PREFILL_WAIT steps, so
        that one prefill serves several: its fixed cost was tens of milliseconds a page."""
        limit = self._row_limit()
        free_rows = limit - len(self.rows)
        if not self.encoded:
            return
        if self.rows:
            if free_rows < max(1, min(limit // 16, len(self.encoded))):
                return
            waited = self.launches - self.encoded[0][3]
            if len(self.encoded) < min(MIN_PREFILL, free_rows) and waited < PREFILL_WAIT:
                return
        group: list[Sequence] = []
        embeds: list[torch.Tensor] = []
        jobs: list[VisionJob] = []
        tokens = 0
        reserve = len(self.rows) // 4  # pages kept back for running rows to grow into
        while self.encoded and len(group) < free_rows:
            prepared, embed, job, _ = self.encoded[0]
            if self.rows and not job.ready():
                break
            need = pages_for(len(prepared.prompt.ids) + 1)
            if group and tokens + len(prepared.prompt.ids) > PREFILL_TOKENS:
                break
            longest = pages_for(min(len(prepared.prompt.ids) + self.live.max_new_tokens,
                                    self.model.config.decoder.max_position_embeddings))
            # a page that could not finish even with the whole pool to itself would loop forever
            if longest > min(self.pool.num_pages - 1, self.table_width):
                self.encoded.popleft()
                yield OcrResult(prepared.request.key, "", [], "error", len(prepared.prompt.ids),
                                prepared.image.token_count, error="prompt too long for the KV cache",
                                page_size=prepared.page_size)
                continue
            if self.pool.free_pages < need + reserve:
                break
            self.encoded.popleft()
            group.append(Sequence(prepared, next(counter), self.pool.allocate(need), self._settings_for(prepared)))
            embeds.append(embed)
            if not jobs or jobs[-1] is not job:
                jobs.append(job)
            tokens += len(prepared.prompt.ids)
        if group:
            yield from self._prefill(group, embeds, jobs)

    def _settings_for(self, prepared: Prepared) -> GenerationSettings:
        """The page's own settings (requests.settings_of: a retry's guard, its request's token limit),
        limited further by a benchmark's forced length."""
        settings = settings_of(prepared.request, self.live)
        forced = self.output_lengths.get(prepared.request.key)
        return settings if forced is None else replace(settings, max_new_tokens=min(forced, settings.max_new_tokens))

    def _prefill(self, group: list[Sequence], embeds: list[torch.Tensor], jobs: list[VisionJob]) -> Iterator[OcrResult]:
        """One packed decoder pass over the group's prompts, first tokens; then the group joins."""
        start = time.perf_counter()
        for job in jobs:
            job.take()
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
        for job in jobs:
            self.stats.vision_seconds += job.seconds()
        self.stats.first_token_at += [now - self.started] * len(group)
        for i, (seq, token) in enumerate(zip(group, first)):
            self._append(seq, token, scores[i] if scores else None)
            done = self._finish_reason(seq, False)
            if done:
                yield self._finish(seq, done)
            else:
                self._add_row(seq)

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
        self.runs[row] = 0
        self.ngram_sizes[row] = seq.settings.ngram_size
        self.ngram_windows[row] = seq.settings.ngram_window

    def _remove_rows(self, rows: list[int]) -> None:
        """Drop finished rows, moving the last rows into the holes so the batch stays dense."""
        doomed = set(rows)
        keep = [i for i in range(len(self.rows)) if i not in doomed]
        n = len(keep)
        moves = [(src, dst) for dst, src in enumerate(keep) if src != dst]
        if moves:
            src = torch.tensor([m[0] for m in moves], device=self.device)
            dst = torch.tensor([m[1] for m in moves], device=self.device)
            for state in (self.tokens, self.positions, self.tables, self.history, self.runs, self.ngram_sizes,
                          self.ngram_windows):
                state[dst] = state[src]
        self.rows = [self.rows[i] for i in keep]
        freed = slice(n, n + len(doomed))
        self.active[freed] = 0
        self.positions[freed] = 0
        self.tables[freed] = 0
        self.history[freed] = -1
        self.runs[freed] = 0

    def _abandon(self) -> None:
        """A run left early (the caller stopped reading): free what its pages held for the next run.
        A step still in flight only computed rows that are done (or are dropped here)."""
        self.in_flight = None
        self.encoded.clear()
        self.last_vision = None
        for seq in self.rows:
            self.pool.release(seq.pages)
        self._remove_rows(list(range(len(self.rows))))

    def close(self) -> None:
        """Stop the preprocessing workers (they are kept between runs: starting them takes seconds)."""
        if self.worker_pool is not None:
            close_pool(self.worker_pool)
            self.worker_pool = None

    def _grow_pages(self, waiting: deque[Prepared], ahead: int) -> None:
        """Give a page to every row whose input to the step being launched starts one (`ahead`
        steps past what the host has read: the step in flight); preempt the youngest when short."""
        while True:
            needy = [i for i, seq in enumerate(self.rows) if (seq.position + ahead) // PAGE >= len(seq.pages)]
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
        # these copies wait for the step in flight; staging them in page-locked memory to copy
        # asynchronously measured no faster on the H200 (the GPU, not the host, is the limit there)
        index = torch.tensor(needy, device=self.device), torch.tensor(cols, device=self.device)
        self.tables[index] = torch.tensor(pages, dtype=torch.int32, device=self.device)

    def _preempt(self, row: int, waiting: deque[Prepared]) -> None:
        """Free a row's pages and queue its page again from scratch (greedy: same result)."""
        seq = self.rows[row]
        seq.done = True
        self.preemptions += 1
        self.pool.release(seq.pages)
        self._remove_rows([row])
        waiting.appendleft(seq.prepared)

    def _decode(self, waiting: deque[Prepared]) -> Iterator[OcrResult]:
        """Launch a step over the running rows, then read the tokens of the step before it."""
        previous = self.in_flight
        self._grow_pages(waiting, ahead=1 if previous else 0)
        self.in_flight = self._launch() if self.rows else None
        if previous:
            yield from self._take(previous)

    def _launch(self) -> Launched:
        n = len(self.rows)
        b = self._bucket(n)
        tokens, loops, scores = self.host_outputs[self.launches % 2]
        self.launches += 1
        cuda = self.device.type == "cuda"
        launched = Launched(list(self.rows), tokens, loops, scores)
        if cuda:
            launched.begin, launched.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            launched.begin.record()
        start = time.perf_counter()
        if b in self.graphs:
            self.graphs[b].replay()
        else:
            self.step_fn(b)
            if self.use_graphs:
                self._capture(b)
        tokens[:n].copy_(self.tokens[:n], non_blocking=cuda)
        loops[:n].copy_(self.loop_flags[:n], non_blocking=cuda)
        if self.logprobs:
            scores[:n].copy_(self.step_logprobs[:n], non_blocking=cuda)
        if cuda:
            launched.end.record()
        launched.seconds = time.perf_counter() - start
        return launched

    def _take(self, step: Launched) -> Iterator[OcrResult]:
        """The step's tokens for its rows that are still running; finished rows leave the batch."""
        seconds = step.wait()
        n = len(step.rows)
        tokens, loops = step.tokens[:n].tolist(), step.loops[:n].tolist()
        scores = step.scores[:n].tolist() if self.logprobs else None
        self.stats.steps.append((n, seconds))
        finished = set()
        for i, seq in enumerate(step.rows):
            if seq.done:
                continue
            self._append(seq, tokens[i], scores[i] if scores else None)
            done = self._finish_reason(seq, loops[i])
            if done:
                finished.add(id(seq))
                yield self._finish(seq, done)
        if finished:
            self._remove_rows([i for i, seq in enumerate(self.rows) if id(seq) in finished])

    def _context_left(self, seq: Sequence) -> int:
        return self.model.config.decoder.max_position_embeddings - seq.prompt_len

    def _finish_reason(self, seq: Sequence, loop: bool) -> str | None:
        """The page's reason to stop (its own settings: token limit, guard, context), else a cancellation."""
        done = finish_reason(seq.generated, self.eos, seq.settings, loop, self._context_left(seq))
        if done is None and self.cancelled and seq.prepared.request.key in self.cancelled:
            done = CANCELLED
        return done

    def cancel(self, key) -> None:
        """Stop the page with this key at its next token, freeing its KV pages (finish reason
        `cancelled`); safe to call from another thread. The caller discards the key when its
        result (or an error) has come back."""
        self.cancelled.add(key)

    def _append(self, seq: Sequence, token: int, logprob: float | None) -> None:
        seq.generated.append(token)
        if logprob is not None:
            seq.logprobs.append(logprob)
        if self.on_token is not None:
            self.on_token(seq.prepared.request.key, token)

    def _finish(self, seq: Sequence, reason: str) -> OcrResult:
        seq.done = True
        self.pool.release(seq.pages)
        seq.pages = []
        request = seq.prepared.request
        return OcrResult(request.key, decode_output(self.tokenizer, seq.generated), seq.generated, reason,
                         seq.prompt_len, seq.prepared.image.token_count, seq.logprobs if self.logprobs else None,
                         page_size=seq.prepared.page_size)
