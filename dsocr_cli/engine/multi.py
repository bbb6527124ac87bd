"""Every GPU of a host: one engine process per GPU, all pulling pages from one shared queue.

Pages are not split up front: each engine takes the next page when it has room for it, so one
slow document never leaves the other GPUs idle. Each engine renders and preprocesses in its own
share of the host's CPU workers. `MultiRunner` offers the Runner interface (run, settings,
close), so `dsocr convert` assembles and writes documents exactly as with one engine; results
arrive in completion order and carry their request's key.

A worker that dies (killed, out of memory) ends the run with an error: the documents finished
so far are written and recorded, those in flight are done again by the next run.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import threading
from typing import Iterable, Iterator

from ..errors import DsocrError
from ..generate import GenerationSettings
from ..runner import OcrRequest, OcrResult
from .spec import EngineSpec

CPU_WORKERS_ENV = "DSOCR_CPU_WORKERS"  # engines --gpus all starts on a host without CUDA (tests: 2); default 1
QUEUED = 1024                          # requests waiting in the shared queue at most
POLL_S = 0.5                           # how often a waiting parent checks that its workers live


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


def _serve(index: int, device: str, engines: int, spec: EngineSpec, tasks, commands, results) -> None:
    """A worker process: build the engine, then for each run pull pages until its end marker.
    Every message to the parent is (index, kind, payload)."""
    import torch

    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    else:  # CPU engines share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // engines))
    try:
        engine = spec.build(device)
        results.put((index, "ready", engine.settings))
        while (settings := commands.get()) is not None:
            for result in engine.run(iter(tasks.get, None), settings):
                results.put((index, "result", result))
            results.put((index, "finished", None))
        engine.close()
    except Exception as exc:
        results.put((index, "failed", f"{type(exc).__name__}: {exc}"))


class MultiRunner:
    def __init__(self, devices: list[str], spec: EngineSpec):
        context = multiprocessing.get_context("spawn")  # CUDA state cannot be forked
        self.devices = devices
        self.tasks = context.Queue(QUEUED)
        self.results = context.Queue()
        self.commands = [context.Queue() for _ in devices]
        self.pages_done = [0 for _ in devices]  # per engine, for the progress display
        self.processes = [
            context.Process(target=_serve, args=(i, device, len(devices), spec, self.tasks, commands, self.results),
                            name=f"dsocr-engine-{device}")  # not daemons: engines start preprocessing workers
            for i, (device, commands) in enumerate(zip(devices, self.commands))]
        for process in self.processes:
            process.start()
        try:
            ready = [payload for _, _, payload in self._messages(len(devices))]
        except BaseException:
            self.close()
            raise
        self.settings: GenerationSettings = ready[0]

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None) -> Iterator[OcrResult]:
        """Results as pages finish on any engine; `settings` as for Engine.run (this run on)."""
        for commands in self.commands:
            commands.put(settings or self.settings)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(requests, stop), daemon=True)
        feeder.start()
        complete = False
        try:
            for index, kind, payload in self._messages(len(self.devices)):
                if kind == "result":
                    self.pages_done[index] += 1
                    yield payload
            complete = True
        finally:
            stop.set()
            feeder.join()
            if not complete:  # left early: the workers still hold pages, and this runner is spent
                self.close()

    def _feed(self, requests: Iterable[OcrRequest], stop: threading.Event) -> None:
        """The shared queue: every request, then one end marker per engine."""
        for item in itertools.chain(requests, [None] * len(self.devices)):
            while not stop.is_set():
                try:
                    self.tasks.put(item, timeout=POLL_S)
                    break
                except queue.Full:
                    pass

    def _messages(self, ends: int) -> Iterator[tuple[int, str, object]]:
        """Messages from the engines until `ends` of them said ready or finished; a dead engine is an error."""
        while ends:
            try:
                index, kind, payload = self.results.get(timeout=POLL_S)
            except queue.Empty:
                for device, process in zip(self.devices, self.processes):
                    if not process.is_alive():
                        raise DsocrError(f"the engine on {device} stopped (exit code {process.exitcode}); finished "
                                         "documents are kept: run the same command again to do the rest") from None
                continue
            if kind == "failed":
                raise DsocrError(f"the engine on {self.devices[index]} failed: {payload}")
            ends -= kind in ("ready", "finished")
            yield index, kind, payload

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        self.tasks.cancel_join_thread()
