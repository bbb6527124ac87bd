"""The loader: a checkpoint resolved and loaded onto a device, and the engine built over it.

What a runner is and what it takes and gives lives in requests.py; this module only makes one.
"""
from __future__ import annotations

import os
import warnings

import torch

from . import checkpoint, timing
from .errors import DsocrError
from .model.ocr import DeepseekOCR
from .requests import Runner, settings_for
from .tokenizer import Tokenizer

def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        warnings.warn("no CUDA device found: running on the CPU (correct but slow)", stacklevel=2)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DsocrError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise DsocrError(f"--device {name}: dsocr runs on cpu or cuda (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DsocrError("--device cuda asked for, but no CUDA device is available (use --device cpu)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DsocrError(f"--device {name}: this host has {torch.cuda.device_count()} CUDA device(s)")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if name not in dtypes:
        raise DsocrError(f"unknown dtype {name!r} (use auto, bf16 or fp32)")
    return dtypes[name]


def open_model(model: str | None, device: str = "auto", dtype: str = "auto") -> tuple[DeepseekOCR, Tokenizer]:
    """Resolve the checkpoint (downloading it on first use) and load model and tokenizer."""
    from .warm_up import finish_warm_up, start_warm_up

    folder = checkpoint.resolve(model)
    dev = pick_device(device)
    kind = pick_dtype(dtype, dev)
    warm = start_warm_up(folder, dev, kind)
    tokenizer = checkpoint.load_tokenizer(folder)
    net = checkpoint.load_model(folder, dev, kind)
    finish_warm_up(warm)
    return net, tokenizer


def load_runner(model: str | None, device: str = "auto", dtype: str = "auto", logprobs: bool = False,
                max_batch: int | None = None, pages: int | None = None, compile: bool = False,
                kv_dtype: str = "auto", **settings) -> Runner:
    """The batched engine over the loaded checkpoint: what every command runs pages through.
    `pages`, when the caller knows how many it will run: a small run gets a batch (and so a KV cache)
    its size instead of the whole GPU, and a single page is prepared in-process rather than by
    workers that take seconds to start."""
    from .engine.engine import Engine

    timing.clock.model_starts()
    net, tokenizer = open_model(model, device, dtype)
    where = net.lm_head.weight.device
    settle(where)
    timing.clock.mark("load")
    workers = preprocess_workers(where) if pages is None or pages > 1 else 0
    if pages is not None and pages <= SMALL_RUN:  # a small engine; a large run gets the rows its prompts allow
        max_batch = min(max_batch or pages, pages)
    engine = Engine(net, tokenizer, settings_for(tokenizer, **settings), logprobs=logprobs,
                    max_batch=max_batch, workers=workers, compile=compile, kv_dtype=kv_dtype)
    settle(where)
    timing.clock.mark("setup")
    return engine


def settle(device: torch.device) -> None:
    """Wait for the device's queued copies and kernels, so a phase's time is its own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SMALL_RUN = 256  # pages up to which a run's engine has exactly their rows (and a KV cache that size)
MAX_WORKERS = 16  # preprocessing processes per engine at most
PREPROCESS_WORKERS_ENV = "DSOCR_PREPROCESS_WORKERS"


def preprocess_workers(device: torch.device | str, engines: int = 1) -> int:
    """Rendering/preprocessing processes per engine: the host's cores but two, shared by its engines.
    Preparing pages is what bounds how fast a GPU's batch fills: on the H200's 16-core host, 8
    workers prepared 46 base pages/s and 14 prepared 74, which took `bench` from 26 to 31 pages/s.
    On the CPU the model needs the cores itself, so pages are prepared in its own process, unless
    DSOCR_PREPROCESS_WORKERS names a number of workers (tests of the workers use it)."""
    if torch.device(device).type != "cuda":
        return int(os.environ.get(PREPROCESS_WORKERS_ENV, "0"))
    return min(MAX_WORKERS, max(0, ((os.cpu_count() or 1) - 2) // engines))
