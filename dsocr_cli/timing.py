"""Where one call's time goes: import (from the process start until the command starts its model),
load (checkpoint resolved, weights on the device), setup (the engine: KV cache, vision encoder) and
work (the pages run and written). The loader marks where each phase ends; `-v` prints the split.
One call per process: the clock is module state, begun again by each command (in-process tests
run several)."""
from __future__ import annotations

import os
import time
from pathlib import Path

PHASES = ("import", "load", "setup", "work")
IMPORTED = time.perf_counter()  # the fallback start where /proc cannot say when the process began


def process_age(stat: str, uptime: str, ticks_per_second: int) -> float:
    """Seconds since a process started, from its /proc/PID/stat text (field 22: the start, in clock
    ticks since boot) and /proc/uptime's text (seconds since boot)."""
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # after the ")" closing the name: field 3 on
    return max(0.0, float(uptime.split()[0]) - start_ticks / ticks_per_second)


def process_start() -> float:
    """This process's start on the time.perf_counter() scale (Linux); elsewhere, when this module loaded."""
    try:
        age = process_age(Path("/proc/self/stat").read_text(), Path("/proc/uptime").read_text(),
                          os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return IMPORTED
    return time.perf_counter() - age


class Clock:
    """Seconds per phase: `mark(phase)` gives the time since the previous mark to `phase`."""

    def __init__(self, started: float, command_started: float):
        self.last, self.command_started = started, command_started
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def model_starts(self) -> None:
        """A model (or a server's runner) is about to be made: what came before was start-up, or,
        for a second model in the same call, work."""
        self.mark("work" if self.seconds else "import")

    def split(self) -> dict[str, float]:
        """The phases so far, ended now as work; a call that made no model was start-up until its command began."""
        if not self.seconds:
            self.seconds["import"] = max(0.0, self.command_started - self.last)
            self.last = self.command_started
        self.mark("work")
        return {phase: self.seconds[phase] for phase in PHASES if phase in self.seconds}


clock = Clock(IMPORTED, IMPORTED)


def begin_call() -> Clock:
    """A new clock for the command starting now, counting from the process start."""
    global clock
    clock = Clock(process_start(), time.perf_counter())
    return clock


def split_line(seconds: dict[str, float]) -> str:
    return ", ".join(f"{phase} {value:.2f} s" for phase, value in seconds.items())
