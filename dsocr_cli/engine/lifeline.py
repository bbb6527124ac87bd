"""Child processes (engines, preprocessing workers) end when the process that started them does.

A parent killed outright (SIGKILL, the OOM killer) runs no clean-up, so its children must notice
on their own, or they stay behind holding memory and a GPU's KV cache. A thread of the child looks
at its parent id every POLL_S seconds: once the parent is gone the child is someone else's and
exits. (Linux's PR_SET_PDEATHSIG would not do: it fires when the *thread* that started the child
ends, and pool workers are started by whichever thread first hands out work.)
"""
from __future__ import annotations

import os
import threading

POLL_S = 0.5


def exit_with_parent(parent: int) -> None:
    """Call first thing in a child, with the pid of the process that started it."""
    if os.getppid() != parent:  # gone already
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="dsocr-lifeline").start()


def _watch(parent: int) -> None:
    stop = threading.Event()
    while os.getppid() == parent:
        stop.wait(POLL_S)
    os._exit(1)
