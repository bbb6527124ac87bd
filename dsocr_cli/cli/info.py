"""`dsocr info`: what a checkpoint's config implies, from the config alone (no weights, no torch;
`--keys` builds the network on the meta device to list its exact layout)."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..bytecode import missing_bytecode
from ..checkpoint import build_empty, official_shapes, resolve_config
from ..gpu_name import gpu_name
from ..model.sizes import parameter_counts
from ..preprocess import mode_grid, modes_for, vision_token_count
from .common import ModelOpt, print_json

A4_AT_144_DPI = (1190, 1684)


def info(
    model: ModelOpt = None,
    keys: Annotated[bool, typer.Option("--keys", help="List the checkpoint keys (and shapes) the config implies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Model sizes, parameter counts, vision tokens per mode and the device, without loading weights."""
    config, source = resolve_config(model)
    if keys:
        shapes = official_shapes(build_empty(config))
        if as_json:
            print_json({"keys": sorted(shapes), "shapes": {k: list(shapes[k]) for k in sorted(shapes)}})
        else:
            for key in sorted(shapes):
                typer.echo(f"{key}\t{'x'.join(map(str, shapes[key]))}")
        return
    dec = config.decoder
    page = A4_AT_144_DPI
    modes = modes_for(config.kind)
    tokens = {name: vision_token_count(m, *page) for name, m in modes.items()}
    second = ({"encoder_width": config.encoder.hidden_size, "encoder_layers": config.encoder.layers}
              if config.encoder else {"clip_width": config.clip.width, "clip_layers": config.clip.layers})
    facts = {
        "model": source,
        "kind": config.kind,
        "decoder": {"layers": dec.num_hidden_layers, "hidden": dec.hidden_size, "heads": dec.num_attention_heads,
                    "routed_experts": dec.n_routed_experts, "experts_per_token": dec.num_experts_per_tok,
                    "shared_experts": dec.n_shared_experts, "vocab": dec.vocab_size},
        "vision": {"sam_width": config.sam.width, "sam_layers": config.sam.layers, **second},
        "parameters": parameter_counts(config),
        "vision_tokens_a4_page": tokens,
        "gundam_tiles_a4_page": list(mode_grid(modes["gundam"], *page)),
        "device": gpu_name() or "cpu (no CUDA device found)",
    }
    uncompiled = missing_bytecode("torch")
    if uncompiled:
        facts["start_up"] = (f"torch has no compiled bytecode: every call compiles it first (seconds); "
                             f"python3 -m compileall -q {uncompiled}")
    if as_json:
        print_json(facts)
        return
    out = Console()
    table = Table(title=f"{'DeepSeek-OCR-2' if config.kind == 'v2' else 'DeepSeek-OCR'}: {source}", show_header=False)
    for section, values in facts.items():
        if isinstance(values, dict):
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        else:
            shown = str(values)
        table.add_row(section.replace("_", " "), shown)
    out.print(table)


def _fmt(value) -> str:
    return f"{value / 1e6:,.1f}M" if isinstance(value, int) and value >= 1_000_000 else str(value)
