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

CPU_WORKERS_ENV = "DSOCR_CPU_WORKERS"  # engines to start on a host without CUDA (tests: 2); default 1
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


def _serve(device: str, spec: EngineSpec, tasks, commands, results) -> None:
    """A worker process: build the engine, then for each run pull pages until its end marker."""
    import torch

    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get(CPU_WORKERS_ENV, "1")))))
    try:
        engine = spec.build(device)
        results.put(("ready", engine.settings))
        while (settings := commands.get()) is not None:
            for result in engine.run(iter(tasks.get, None), settings):
                results.put(("result", result))
            results.put(("finished", None))
        engine.close()
    except Exception as exc:
        results.put(("failed", f"{type(exc).__name__}: {exc}"))


class MultiRunner:
    def __init__(self, devices: list[str], spec: EngineSpec):
        context = multiprocessing.get_context("spawn")  # CUDA state cannot be forked
        self.devices = devices
        self.tasks = context.Queue(QUEUED)
        self.results = [context.Queue() for _ in devices]
        self.commands = [context.Queue() for _ in devices]
        self.pages_done = [0 for _ in devices]
        self.processes = [context.Process(target=_serve, args=(device, spec, self.tasks, commands, results),
                                          daemon=True, name=f"dsocr-engine-{device}")
                          for device, commands, results in zip(devices, self.commands, self.results)]
        for process in self.processes:
            process.start()
        try:
            self.settings: GenerationSettings = [self._receive(i, "ready") for i in range(len(devices))][0]
        except BaseException:
            self.close()
            raise

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None) -> Iterator[OcrResult]:
        """Results as pages finish on any engine; `settings` as for Engine.run (this run on)."""
        settings = settings or self.settings
        for commands in self.commands:
            commands.put(settings)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(requests, stop), daemon=True)
        feeder.start()
        running = set(range(len(self.devices)))
        try:
            while running:
                for i in list(running):
                    for kind, payload in self._drain(i):
                        if kind == "result":
                            self.pages_done[i] += 1
                            yield payload
                        else:
                            running.discard(i)
        finally:
            stop.set()
            feeder.join()
            if running:  # left early: the workers still hold pages, and this runner is spent
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

    def _drain(self, i: int) -> Iterator[tuple[str, object]]:
        """Worker i's messages ready now (waiting a moment if none), until its run finishes."""
        try:
            message = self.results[i].get(timeout=POLL_S / len(self.devices))
        except queue.Empty:
            self._check(i)
            return
        while True:
            kind, payload = message
            if kind == "failed":
                raise DsocrError(f"the engine on {self.devices[i]} failed: {payload}")
            yield kind, payload
            if kind == "finished":
                return
            try:
                message = self.results[i].get_nowait()
            except queue.Empty:
                return

    def _receive(self, i: int, expected: str):
        while True:
            for kind, payload in self._drain(i):
                if kind == expected:
                    return payload

    def _check(self, i: int) -> None:
        process = self.processes[i]
        if not process.is_alive():
            raise DsocrError(f"the engine on {self.devices[i]} stopped (exit code {process.exitcode}); "
                             "finished documents are kept: run the same command again to do the rest")

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        self.tasks.cancel_join_thread()
