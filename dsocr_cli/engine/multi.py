"""Every GPU of a host: one engine process per GPU, fed pages as they make room for them.

Pages are not split up front: the parent hands each page to the engine holding fewest (at most
what an engine takes in at once), and more as pages finish, so one slow document never leaves
the other GPUs idle. Each engine renders and preprocesses in its own
share of the host's CPU workers. `MultiRunner` offers the Runner interface (run, settings,
close), so `dsocr convert` assembles and writes documents exactly as with one engine; results
arrive in completion order and carry their request's key.

An engine that dies (killed, out of memory) or fails gives its pages to the others; when none is
left the run ends with an error: the documents finished so far are written and recorded, those in
flight are done again by the next run.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import warnings
from multiprocessing import connection
from typing import Iterable, Iterator

from ..errors import DsocrError, RunFailure
from ..requests import PENDING, GenerationSettings, OcrRequest, OcrResult, TokenCallback
from .feeder import DEPTH
from .lifeline import exit_with_parent
from .spec import EngineSpec

CPU_WORKERS_ENV = "DSOCR_CPU_WORKERS"  # engines --gpus all starts on a host without CUDA (tests: 2); default 1
POLL_S = 0.5                           # how long a waiting parent sleeps between looks at its engines
WAIT_S = 0.001                         # how long an engine waits for a page before going on (decoding)


def parse_gpus(text: str, available: int) -> list[int]:
    """--gpus: 'all' or a comma-separated list of CUDA indices among `available` GPUs."""
    if text.strip() == "all":
        return list(range(available))
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise DsocrError(f"--gpus {text}: use all, or GPU indices such as 0,1,3") from None
    if len(set(indices)) != len(indices):
        raise DsocrError(f"--gpus {text}: a GPU is named twice")
    missing = [i for i in indices if not 0 <= i < available]
    if missing:
        raise DsocrError(f"--gpus {text}: no GPU {missing[0]} (this host has {available}: 0..{available - 1})"
                         if available else f"--gpus {text}: this host has no CUDA GPU (use --gpus all for the CPU)")
    return indices


def engine_devices(text: str) -> list[str]:
    """Devices for --gpus on this host: cuda:N for each GPU named, or CPU engines without CUDA."""
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0 and text.strip() == "all":
        return ["cpu"] * max(1, int(os.environ.get(CPU_WORKERS_ENV, "1")))
    return [f"cuda:{i}" for i in parse_gpus(text, available)]


def _pages(tasks) -> Iterator[OcrRequest | object]:
    """An engine's requests: what the parent hands it, PENDING while nothing is there, until its end marker."""
    while True:
        try:
            request = tasks.get(timeout=WAIT_S)
        except queue.Empty:
            yield PENDING
            continue
        if request is None:
            return
        yield request


class _Outbox:
    """An engine's messages to the parent: sent by a thread of its own over the engine's own pipe, so
    the engine never waits for the parent to read, and an engine killed mid-message harms no other."""

    def __init__(self, index: int, pipe):
        self.index, self.pipe = index, pipe
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def put(self, kind: str, payload) -> None:
        self.queue.put((self.index, kind, payload))

    def _send(self) -> None:
        while (message := self.queue.get()) is not None:
            self.pipe.send(message)

    def close(self) -> None:
        """Send what is queued, then hang up."""
        self.queue.put(None)
        self.thread.join()
        self.pipe.close()


def _serve(index: int, device: str, engines: int, spec: EngineSpec, tasks, commands, pipe, parent: int) -> None:
    """A worker process: build the engine, then for each run take pages until its end marker.
    Every message to the parent is (index, kind, payload). It exits when the parent is gone."""
    import torch

    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the engines
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    else:  # CPU engines share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // engines))
    outbox = _Outbox(index, pipe)
    try:
        engine = spec.build(device)
        outbox.put("ready", (engine.settings, engine.max_batch))
        while (settings := commands.get()) is not None:
            for result in engine.run(_pages(tasks), settings):
                outbox.put("result", result)
            outbox.put("finished", None)
        engine.close()
    except Exception as exc:
        outbox.put("failed", f"{type(exc).__name__}: {exc}")
    finally:
        outbox.close()


class MultiRunner:
    """A Runner (requests.py) over one engine process per device."""
    tokenizer = None  # each engine loads its own, in its process
    live_requests = True

    def __init__(self, devices: list[str], spec: EngineSpec):
        context = multiprocessing.get_context("spawn")  # CUDA state cannot be forked
        self.devices = devices
        self.tasks = [context.Queue() for _ in devices]
        self.commands = [context.Queue() for _ in devices]
        pipes = [context.Pipe(duplex=False) for _ in devices]
        self.results = [reader for reader, _ in pipes]  # each engine's own: one dying blocks no other
        self.pages_done = [0 for _ in devices]  # per engine, for the progress display
        self.processes = [
            context.Process(target=_serve, args=(i, device, len(devices), spec, tasks, commands, writer, os.getpid()),
                            name=f"dsocr-engine-{device}")  # not daemons: engines start preprocessing workers
            for i, (device, tasks, commands, (_, writer)) in enumerate(zip(devices, self.tasks, self.commands, pipes))]
        self.alive = set(range(len(devices)))
        self.inflight: list[dict[object, OcrRequest]] = [{} for _ in devices]  # pages each engine holds, by key
        self.orphans: list[OcrRequest] = []     # pages of an engine that died, to be run again
        self.room = threading.Condition()
        for process, (_, writer) in zip(self.processes, pipes):
            process.start()
            writer.close()  # the engine holds the only writing end: its pipe ends when it does
        try:
            ready = {index: payload for index, _, payload in self._messages()}
        except BaseException:
            self.close()
            raise
        self.settings: GenerationSettings = next(iter(ready.values()))[0]
        # pages an engine holds at most: as many as it takes in (a batch decoding, one waiting, those
        # being prepared), so it finds a page whenever it has room, and the other engines get the rest
        self.limit = 2 * max(batch for _, batch in ready.values()) + DEPTH

    @property
    def engines(self) -> int:
        return len(self.alive)

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None) -> Iterator[OcrResult]:
        """Results as pages finish on any engine; `settings` as for Engine.run (this run only). Pages of
        an engine that dies are run again on the others, in a further round."""
        if on_token is not None:
            raise ValueError("streaming tokens needs the engine in this process, not --gpus")
        settings = settings or self.settings
        complete = False
        try:
            yield from self._round(requests, settings)
            while self.orphans:
                again, self.orphans = self.orphans, []
                yield from self._round(again, settings)
            complete = True
        finally:
            if not complete:  # left early: the workers still hold pages, and this runner is spent
                self.close()

    def _round(self, requests: Iterable[OcrRequest], settings: GenerationSettings) -> Iterator[OcrResult]:
        for index in self.alive:
            self.commands[index].put(settings)
        stop = threading.Event()
        failures: list[BaseException] = []
        dealer = threading.Thread(target=self._deal, args=(requests, stop, failures), daemon=True)
        dealer.start()
        try:
            for index, kind, payload in self._messages():
                if kind == "result":
                    with self.room:
                        taken = self.inflight[index].pop(payload.key, None)
                        self.room.notify()
                    if taken is not None:  # else a page already handed to another engine
                        self.pages_done[index] += 1
                        yield payload
            if failures:  # the requests themselves failed: the caller's error, raised in its thread
                raise failures[0]
        finally:
            stop.set()
            with self.room:
                self.room.notify()
            dealer.join()

    def _deal(self, requests: Iterable[OcrRequest], stop: threading.Event, failures: list[BaseException]) -> None:
        """Each page to the living engine holding fewest, as engines make room; then an end marker to each.
        At PENDING the dealer waits for a result, and hands out the pages of an engine lost meanwhile
        (the requests may wait for their results: they would never come in a later round)."""
        try:
            for request in requests:
                if request is not PENDING:
                    self._hand(request, stop)
                    continue
                with self.room:
                    if not self.orphans:
                        self.room.wait(POLL_S)
                    again, self.orphans = self.orphans, []
                for orphan in again:
                    self._hand(orphan, stop)
        except BaseException as exc:
            failures.append(exc)
        for index in list(self.alive):
            self.tasks[index].put(None)

    def _hand(self, request: OcrRequest, stop: threading.Event) -> None:
        with self.room:
            while self._emptiest_with_room() is None and not stop.is_set():
                self.room.wait()
            if stop.is_set():
                return
            index = self._emptiest_with_room()
            self.inflight[index][request.key] = request
        self.tasks[index].put(request)

    def _emptiest_with_room(self) -> int | None:
        """The living engine holding fewest pages, if it has room for one more (call with the lock held)."""
        if not self.alive:
            return None
        index = min(sorted(self.alive), key=lambda i: len(self.inflight[i]))
        return index if len(self.inflight[index]) < self.limit else None

    def _messages(self) -> Iterator[tuple[int, str, object]]:
        """Messages from the engines until every living one said ready or finished. An engine that dies
        or fails gives up its pages to the others (a warning says so); with none left, an error."""
        waiting = set(self.alive)
        while waiting:
            engines = sorted(self.alive)
            connection.wait([self.results[i] for i in engines], timeout=POLL_S)
            for i in engines:
                try:
                    while i in self.alive and self.results[i].poll():
                        index, kind, payload = self.results[i].recv()
                        if kind == "failed":
                            self._lose(i, f"failed: {payload}")
                            break
                        if kind in ("ready", "finished"):
                            waiting.discard(i)
                        yield index, kind, payload
                except (EOFError, OSError):  # the pipe ended: the engine is gone
                    self.processes[i].join(timeout=POLL_S)
                    self._lose(i, f"stopped (exit code {self.processes[i].exitcode})")
            waiting &= self.alive

    def _lose(self, index: int, why: str) -> None:
        with self.room:
            self.alive.discard(index)
            self.orphans += self.inflight[index].values()
            self.inflight[index] = {}
            self.room.notify()
        if not self.alive:
            raise RunFailure(f"the engine on {self.devices[index]} {why}; no engine is left: finished documents "
                             "are kept, run the same command again to do the rest")
        warnings.warn(f"the engine on {self.devices[index]} {why}; its pages go to the other engines")

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for tasks in self.tasks:
            tasks.cancel_join_thread()
        for reader in self.results:
            reader.close()
