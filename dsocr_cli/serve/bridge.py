"""From the engine thread to the waiting caller: an asyncio queue per HTTP request, a plain queue per
in-process run (LocalRunner), and the cancellation that follows a caller who has gone."""
from __future__ import annotations

import asyncio
import queue
from dataclasses import replace
from typing import Iterable, Iterator

from ..requests import GenerationSettings, OcrRequest, OcrResult, settings_of
from .scheduler import Scheduler, Ticket

# the settings a client may choose; the rest (token whitelist, the token cap) are the server's
GUARD_FIELDS = ("ngram_size", "ngram_window", "loop_span", "ignore_eos")


def guard_for(scheduler: Scheduler, settings: GenerationSettings | None = None, **fields) -> GenerationSettings:
    """The server's settings with a caller's guard (from `settings` or by field), its token cap kept."""
    if settings is not None:
        fields = {name: getattr(settings, name) for name in GUARD_FIELDS}
    return replace(scheduler.base, **{k: v for k, v in fields.items() if k in GUARD_FIELDS})


class Pending:
    """One request in flight for an async handler: tokens (when streaming) then the OcrResult."""

    def __init__(self, scheduler: Scheduler, request: OcrRequest, guard: GenerationSettings, stream: bool):
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue = asyncio.Queue()
        self.scheduler = scheduler
        self.done = False
        self.ticket: Ticket = scheduler.submit(request, guard, self._deliver, stream)

    def _deliver(self, item) -> None:
        self.loop.call_soon_threadsafe(self.items.put_nowait, item)

    async def next(self) -> OcrResult | int:
        item = await self.items.get()
        if isinstance(item, OcrResult):
            self.done = True
        return item

    async def result(self, http_request) -> OcrResult | None:
        """The final result, or None (the request cancelled) if the client disconnects first."""
        waiting = asyncio.ensure_future(self._final())
        gone = asyncio.ensure_future(disconnected(http_request))
        finished, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in finished:
            gone.cancel()
            return waiting.result()
        waiting.cancel()
        self.cancel()
        return None

    async def _final(self) -> OcrResult:
        while True:
            item = await self.next()
            if isinstance(item, OcrResult):
                return item

    def cancel(self) -> None:
        if not self.done:
            self.scheduler.cancel(self.ticket)


async def disconnected(http_request) -> None:
    """Returns once the client has gone (the body was read already, so only a disconnect comes)."""
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


class LocalRunner:
    """The Runner protocol over the shared scheduler, for work done inside the server (/v1/convert):
    every request goes into the common batch, results come back to this caller alone."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.settings = scheduler.base
        self.tokenizer = None                                     # tokens are not streamed to a convert call
        self.engines, self.devices, self.pages_done = 1, [], []  # the server's one engine
        self.live_requests = False  # the requests are all submitted before results are read
        self.tickets: dict[int, Ticket] = {}
        self.results: queue.Queue = queue.Queue()
        self.stopped = False

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token=None) -> Iterator[OcrResult]:
        settings = settings or self.settings
        self.results = results = queue.Queue()
        keys = {}
        for request in requests:
            if self.stopped:
                break
            own = settings_of(request, settings)
            ticket = self.scheduler.submit(replace(request, max_new_tokens=own.max_new_tokens),
                                           guard_for(self.scheduler, own), results.put)
            keys[ticket.request.key] = request.key
            self.tickets[ticket.request.key] = ticket
        for _ in range(len(keys)):
            result = None if self.stopped else results.get()
            if result is None:
                return
            self.tickets.pop(result.key, None)
            yield replace(result, key=keys[result.key])

    def stop(self) -> None:
        """The client has gone: cancel what is queued or running, end the run."""
        self.stopped = True
        for ticket in list(self.tickets.values()):
            self.scheduler.cancel(ticket)
        self.results.put(None)

    def close(self) -> None:
        pass
