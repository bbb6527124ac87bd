"""The name of the GPU a run would use, read from the NVIDIA driver's /proc files rather than
from torch (importing torch to ask costs seconds; `dsocr info` should answer at once)."""
from __future__ import annotations

import os
from pathlib import Path

DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU, named by its PCI bus id


def field(information: str, name: str) -> str | None:
    """A `Name: value` line's value in a driver information file."""
    for line in information.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def first_visible_gpu(informations: list[str], visible: str | None) -> str | None:
    """The model name of device 0 as CUDA numbers them: `informations` are the GPUs' information
    files in PCI bus order; `visible` is CUDA_VISIBLE_DEVICES (None: unset). Its first entry picks
    the GPU, by index or by UUID (or a prefix of one); an entry naming none hides them all."""
    if visible is not None:
        first = visible.split(",")[0].strip()
        if first.lstrip("-").isdigit():
            index = int(first)
            informations = informations[index:index + 1] if index >= 0 else []
        elif first.startswith("GPU-"):
            informations = [text for text in informations if (field(text, "GPU UUID") or "").startswith(first)][:1]
        elif not first.startswith("MIG-"):  # a MIG slice is part of some GPU: the first is our best guess
            informations = []
    return field(informations[0], "Model") if informations else None


def gpu_name() -> str | None:
    """Device 0's model name from the driver, or None when there is no NVIDIA GPU to use."""
    try:
        folders = sorted(DRIVER_GPUS.iterdir())
        informations = [(folder / "information").read_text(encoding="utf-8", errors="replace") for folder in folders]
    except OSError:
        return None
    return first_visible_gpu(informations, os.environ.get("CUDA_VISIBLE_DEVICES"))
