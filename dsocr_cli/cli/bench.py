"""`dsocr bench`: pages/s of the engine on synthetic pages, full-size model, one table."""
from __future__ import annotations

import os
import time
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from .. import checkpoint
from ..bench import run_bench
from ..errors import DsocrError
from ..random_weights import random_model
from ..runner import open_model, pick_device, pick_dtype
from .common import DeviceOpt, DtypeOpt, ModelOpt, ModeName, ModeOpt, mode_of, print_json, warn


def bench(
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Full-size model with seeded random weights (no download).")] = False,
    mode: ModeOpt = ModeName.base,
    pages: Annotated[int, typer.Option("--pages", min=1, help="Synthetic A4 pages to convert.")] = 512,
    output_tokens: Annotated[int, typer.Option("--output-tokens", min=1, help="Tokens generated per page (EOS ignored).")] = 1000,
    batch: Annotated[str, typer.Option("--batch", help="Rows decoded together: auto (from free GPU memory) or N.")] = "auto",
    baseline: Annotated[bool, typer.Option("--baseline", help="Also time the plain unbatched path on one page.")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Also list the kernels a full-batch decode step spends its time in.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Throughput on synthetic pages: pages/s, tokens/s, first-token latency, vision and decode cost, memory."""
    if batch != "auto" and not batch.isdigit():
        raise DsocrError("--batch takes auto or a number")
    start = time.perf_counter()
    if random_weights:
        dev = pick_device(device)
        net = random_model(checkpoint.ModelConfig.from_dict(checkpoint.official_config()), 0, dev, pick_dtype(dtype, dev))
        from ..tokenizer import Tokenizer
        tokenizer = Tokenizer.bundled()
    else:
        net, tokenizer = open_model(model, device, dtype)
    load_s = time.perf_counter() - start
    if net.lm_head.weight.device.type != "cuda":
        warn("benchmarking on the CPU: expect seconds per token")
    workers = min(8, max(0, (os.cpu_count() or 1) - 2)) if net.lm_head.weight.device.type == "cuda" else 0
    report = run_bench(net, tokenizer, mode_of(mode), pages, output_tokens,
                       None if batch == "auto" else int(batch), baseline, workers, profile)
    report["model"] = "random weights (full size)" if random_weights else checkpoint.model_name(model)
    report["load_s"] = load_s
    report["dtype"] = str(net.lm_head.weight.dtype).replace("torch.", "")
    if as_json:
        print_json(report)
        return
    table = Table(title=f"dsocr bench: {report['mode']} mode, {pages} pages x {output_tokens} tokens")
    table.add_column("measure")
    table.add_column("value", justify="right")
    kernels = report.pop("profile", None)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3g}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
    if kernels:
        top = Table(title="full-batch decode step: device time by kernel")
        for column in ("kernel", "ms/step", "calls/step"):
            top.add_column(column)
        for row in kernels:
            top.add_row(row["kernel"], f"{row['ms_per_step']:.3f}", f"{row['calls_per_step']:.0f}")
        Console().print(top)
