"""Seeded random weights: tiny test checkpoints in the official layout, and full-size models for
benchmarks (random weights exercise the same kernels and memory traffic as the released ones).
"""
from __future__ import annotations

import gzip
import json
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import build_on, checkpoint_layout
from .model.config import ModelConfig
from .model.decoder import RMSNorm
from .model.ocr import DeepseekOCR
from .model.sam import LayerNorm2d

SHARD = "model-00001-of-000001.safetensors"


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Matrices N(0, 1/fan_in); norm weights 1 + 0.1 N(0, 1); other vectors 0.1 N(0, 1)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d, RMSNorm))}
    convs = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    for _, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
        if p.dim() >= 2:
            fan_in = p[0].numel() if id(p) in convs else p.shape[-1]
            p.copy_(noise / fan_in ** 0.5)
        elif id(p) in norm_weights:
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)
    return model


def random_model(config: ModelConfig, seed: int, device: torch.device, dtype: torch.dtype) -> DeepseekOCR:
    model = build_on(config, device, dtype)
    return randomize_(model, seed).for_inference()


def write_checkpoint(folder: str | Path, config: dict, seed: int = 0, dtype: torch.dtype = torch.float32,
                     device: str = "cpu") -> Path:
    """A random checkpoint in the official layout: config.json, tokenizer files, one safetensors shard
    with the official key names, and model.safetensors.index.json. `device` only speeds up the drawing
    (a full-size model is drawn in seconds on a GPU); the numbers are the generator's for that device."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = random_model(ModelConfig.from_dict(config), seed, torch.device(device), dtype)
    params = dict(model.named_parameters())
    tensors = {key: params[slot.param][slot.index].contiguous().cpu().clone()
               for key, slot in checkpoint_layout(model).items()}
    save_file(tensors, str(folder / SHARD), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": {k: SHARD for k in sorted(tensors)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer = gzip.decompress((files("dsocr_cli.assets") / "tokenizer.json.gz").read_bytes())
    (folder / "tokenizer.json").write_bytes(tokenizer)
    return folder
