"""A GPU's first-use costs, paid while the weights load.

A process's first vision pass took about 1 s more than its next on an H200: cuDNN's libraries
load and plan the convolutions, cuBLAS makes its handles, Triton loads each kernel from its cache
(and hashes its own files first: triton_key.py remembers that hash across processes), and each of
torch's kernels is loaded at its first launch. None of that needs the weights, and loading them
leaves the host mostly waiting on the disk and the copies; so a thread runs one pass over a
throwaway vision tower with uninitialised weights (the output is discarded) on a stream of its
own while the weights stream in. On the H200 this took
`ocr`'s work from 1.6-2.0 s to 0.8-0.9 s, and its load from 1.2-1.8 s to 2.0-2.3 s. Warming the
decoder the same way (a prefill and a decode step through a throwaway two-layer decoder) took the
work to 0.33-0.40 s but the load up by as much, with no gain overall (4 calls each, one H200), so
it is not done.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from .checkpoint import allocate, build_empty, read_config
from .model.config import ModelConfig
from .preprocess import normalize
from .triton_key import remember_triton_key

VISION_PARTS = ("sam_model", "vision_model", "qwen2_model", "projector")  # what encode_views reads
SIDE = 1024           # a base/gundam view; other sizes share every kernel but the global attention's
MIN_MEMORY = 20 << 30  # the tower (0.8 GB) and its pass beside the loading model: big GPUs only


class WarmUp(threading.Thread):
    """One vision pass on a throwaway tower; `error` says why it failed, if it did (nothing is lost
    then: the first real pass pays the costs)."""

    def __init__(self, config: ModelConfig, device: torch.device, dtype: torch.dtype):
        super().__init__(name="dsocr-warm-up", daemon=True)
        self.config, self.device, self.dtype = config, device, dtype
        self.error: BaseException | None = None

    @torch.inference_mode()
    def run(self) -> None:
        try:
            model = build_empty(self.config)
            for name in VISION_PARTS:
                if hasattr(model.model, name):
                    allocate(getattr(model.model, name), self.device, self.dtype)
            stream = torch.cuda.Stream(self.device)
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                pixels = torch.zeros(1, 3, SIDE, SIDE, dtype=torch.uint8, device=self.device)
                model.encode_views(normalize(pixels))
                stream.synchronize()
        except Exception as exc:  # noqa: BLE001 - only a head start is lost
            self.error = exc


def start_warm_up(folder: Path, device: torch.device, dtype: torch.dtype) -> WarmUp | None:
    """The warm-up for the checkpoint in `folder`, begun on a large GPU, or None (the CPU and small
    GPUs have nothing to gain)."""
    if device.type != "cuda":
        return None
    remember_triton_key()
    if torch.cuda.get_device_properties(device).total_memory < MIN_MEMORY:
        return None
    warm = WarmUp(read_config(folder), device, dtype)
    warm.start()
    return warm


def finish_warm_up(warm: WarmUp | None) -> None:
    """Wait for it, then hand its memory back (the KV cache is sized from what is free)."""
    if warm is not None:
        warm.join()
        torch.cuda.empty_cache()
