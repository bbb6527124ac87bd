"""Shared fixtures: a tiny random checkpoint in the official layout, built once per test session."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from dsocr_cli.checkpoint import official_config
from dsocr_cli.random_weights import write_checkpoint

TINY_DECODER = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, n_routed_experts=8, n_shared_experts=1,
                    num_experts_per_tok=2)
TINY_VISION = {"width": {
    "sam_vit_b": {"width": 32, "layers": 2, "heads": 2, "global_attn_indexes": [1],
                  "downsample_channels": [32, 64], "neck_channels": 32},
    "clip-l-14-224": {"width": 64, "layers": 1, "heads": 2}}}


def tiny_config() -> dict:
    """The released config.json with every size shrunk (same keys, so the same loader reads it)."""
    config = copy.deepcopy(official_config())
    config.update(TINY_DECODER)
    config["language_config"].update(TINY_DECODER)
    config["vision_config"] = TINY_VISION
    config["projector_config"].update(input_dim=64 + 64, n_embed=64)
    return config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Folder with config.json, tokenizer.json, model-00001-of-000001.safetensors and its index."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny-ocr"), tiny_config(), seed=0)


def run_dsocr(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the real command line (python -m dsocr_cli) and capture its output."""
    return subprocess.run([sys.executable, "-m", "dsocr_cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=300)
