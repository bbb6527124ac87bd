"""Functions that stay eager inside torch.compile, marked without importing torch._dynamo.

`torch.compiler.disable` imports torch._dynamo (and sympy) on the spot: 2-5 s that every command
paid at import time, though only `--compile` traces anything. Functions are marked here instead,
and `disable_marked()` wraps them just before a compile (engine.compiled_step).
"""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)
_marked: list[Callable] = []


def eager_under_compile(fn: F) -> F:
    """Keep fn (a module-level function or a method) out of any later torch.compile trace."""
    _marked.append(fn)
    return fn


def disable_marked() -> None:
    """Replace each marked function, where it is defined, by its torch.compiler.disable wrapper."""
    import torch

    for fn in _marked:
        owner = sys.modules[fn.__module__]
        *path, name = fn.__qualname__.split(".")
        for part in path:
            owner = getattr(owner, part)
        if getattr(owner, name) is fn:
            setattr(owner, name, torch.compiler.disable(fn))
