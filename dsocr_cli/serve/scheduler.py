"""One engine, many callers: continuous batching across the requests of every client.

Callers on any thread `submit` a request with the generation guard it wants and a `deliver`
callback; one engine thread runs `Engine.run` over a long-lived, lazily pulled stream of the
queued requests, so pages from different clients are decoded in the same batch. Results (and,
for streaming callers, each token) go back through `deliver` on the engine thread.

The repetition guard's sizes are baked into the engine's captured decode steps, so requests are
grouped by guard: one group runs at a time, and the stream of a group ends (its pages drain) when
a request of another group has waited longer than its next one. Each request's own token limit
rides on the request (OcrRequest.max_new_tokens), so limits mix freely within a batch.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from ..engine.engine import Engine, EngineStats
from ..requests import PENDING, GenerationSettings, OcrRequest, OcrResult, stronger_guard


@dataclass
class Ticket:
    """One submitted request and where its result goes."""
    request: OcrRequest              # key: the scheduler's own id
    guard: GenerationSettings        # the engine settings it runs under (max_new_tokens: the server's)
    deliver: Callable[[OcrResult | int], None]  # a token id (streaming) or the final result
    stream: bool = False
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False


@dataclass
class Counters:
    """What /metrics reports; written by the engine thread (and submit/cancel under the lock)."""
    started: float = field(default_factory=time.monotonic)
    submitted: int = 0
    pages: int = 0                   # results delivered (finished, failed or cancelled)
    errors: int = 0
    cancelled: int = 0
    tokens: int = 0                  # generated tokens, all requests
    steps: int = 0                   # decode steps
    step_rows: int = 0               # rows over all decode steps (rows / steps: the mean batch)
    max_rows: int = 0                # the most rows one decode step held
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # (time, tokens) per result


class QueueFull(Exception):
    pass


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 4096):
        self.engine = engine
        self.base = engine.settings          # the server's settings: its token cap, its default guard
        self.max_queue = max_queue
        self.lock = threading.Condition()
        self.queues: dict[GenerationSettings, deque[Ticket]] = {}
        self.running: dict[int, Ticket] = {}   # handed to the engine, result not yet delivered
        self.ids = itertools.count()
        self.closing = False
        self.counters = Counters()
        self.thread = threading.Thread(target=self._loop, name="dsocr-engine", daemon=True)
        self.thread.start()

    # ---- callers' side (any thread) --------------------------------------------------------------

    def submit(self, request: OcrRequest, guard: GenerationSettings, deliver, stream: bool = False) -> Ticket:
        """Queue a request (its key is replaced by the scheduler's); QueueFull when too many wait."""
        with self.lock:
            if self.closing:
                raise QueueFull("the server is shutting down")
            if self.queued() >= self.max_queue:
                raise QueueFull(f"{self.max_queue} requests are waiting already; try again later")
            if guard != self.base and guard == stronger_guard(self.base):
                # a retry under the server's guard (what convert --server sends) runs as a retry row of
                # the server's group: the engine gives each row its own guard, so it need not wait
                request, guard = replace(request, retry=True), self.base
            ticket = Ticket(replace(request, key=next(self.ids)), guard, deliver, stream)
            self.queues.setdefault(guard, deque()).append(ticket)
            self.counters.submitted += 1
            self.lock.notify_all()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The caller has gone: a queued request never runs; a running one stops at its next token."""
        with self.lock:
            if ticket.cancelled:
                return
            ticket.cancelled = True
            self.counters.cancelled += 1
            if ticket.request.key in self.running:
                self.engine.cancel(ticket.request.key)

    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def close(self, timeout: float | None = None) -> None:
        """Take no more requests, finish those queued and running, stop the engine thread."""
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        self.thread.join(timeout)

    # ---- the engine thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            guard = self._next_group()
            if guard is None:
                return
            try:
                for result in self.engine.run(self._stream(guard), settings=guard, on_token=self._on_token):
                    self._deliver(result)
            except Exception as exc:  # an engine failure fails the pages it held, not the server
                for key in list(self.running):
                    self._deliver(OcrResult(key, "", [], "error", 0, 0, error=f"engine failed: {type(exc).__name__}: {exc}"))
            self._fold_stats()

    def _next_group(self) -> GenerationSettings | None:
        """The guard of the oldest waiting request; blocks while nothing waits; None once closed."""
        with self.lock:
            while True:
                heads = [(q[0].submitted, guard) for guard, q in self.queues.items() if q]
                if heads:
                    return min(heads, key=lambda head: head[0])[1]
                if self.closing:
                    return None
                self.lock.wait()

    def _stream(self, guard: GenerationSettings) -> Iterator[OcrRequest]:
        """The group's requests as the engine pulls them: PENDING while pages run and none waits,
        blocking only when the engine is idle. It ends when another group's request is older (or
        the server closes): the engine then finishes the pages it holds and the run returns."""
        while True:
            self._fold_stats()
            with self.lock:
                ticket = self._take(guard)
                if ticket is None:
                    if self._other_waits(guard) or (self.closing and not self.queues.get(guard)):
                        return
                    if not self.running:
                        self.lock.wait()
                        continue
                    request = PENDING
                else:
                    self.running[ticket.request.key] = ticket
                    request = ticket.request
            yield request

    def _take(self, guard: GenerationSettings) -> Ticket | None:
        """The group's next live request, if no other group's request has waited longer."""
        queue = self.queues.get(guard)
        while queue and queue[0].cancelled:
            queue.popleft()
        if not queue:
            return None
        others = [q[0].submitted for g, q in self.queues.items() if g != guard and q]
        if others and min(others) < queue[0].submitted:
            return None
        return queue.popleft()

    def _other_waits(self, guard: GenerationSettings) -> bool:
        return any(q and any(not t.cancelled for t in q) for g, q in self.queues.items() if g != guard)

    def _on_token(self, key: int, token: int) -> None:
        ticket = self.running.get(key)
        if ticket is not None and ticket.stream and not ticket.cancelled:
            ticket.deliver(token)

    def _deliver(self, result: OcrResult) -> None:
        with self.lock:
            ticket = self.running.pop(result.key, None)
            self.engine.cancelled.discard(result.key)
            c = self.counters
            c.pages += 1
            c.errors += result.error is not None
            c.tokens += len(result.token_ids)
            c.recent.append((time.monotonic(), len(result.token_ids)))
        if ticket is not None and not ticket.cancelled:
            ticket.deliver(result)

    def _fold_stats(self) -> None:
        """Engine step statistics into the counters, and the engine's lists emptied (a server runs for days)."""
        stats = self.engine.stats
        if not stats.steps:
            return
        c = self.counters
        c.steps += len(stats.steps)
        c.step_rows += sum(rows for rows, _ in stats.steps)
        c.max_rows = max(c.max_rows, max(rows for rows, _ in stats.steps))
        self.engine.stats = EngineStats()

    def tokens_per_s(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds of finished requests."""
        now = time.monotonic()
        with self.lock:
            recent = sum(n for t, n in self.counters.recent if now - t <= window)
        return recent / min(window, max(now - self.counters.started, 1e-9))
