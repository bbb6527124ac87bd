"""Shared fixtures: a tiny random checkpoint in the official layout, built once per test session."""
from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsocr_cli.checkpoint import V2_MODEL, official_config
from dsocr_cli.cli import main
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


TINY_V2_VISION = {"model_name": "deepencoderv2", "width": {
    "sam_vit_b": {"width": 32, "layers": 2, "heads": 2, "global_attn_indexes": [1],
                  "downsample_channels": [32, 1024], "neck_channels": 32},  # 1024: stale, as released
    "qwen2-0-5b": {"dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate_size": 96}}}


def tiny_v2_config() -> dict:
    """The released DeepSeek-OCR-2 config.json with every size shrunk."""
    config = copy.deepcopy(official_config(V2_MODEL))
    config.update(TINY_DECODER)
    config["language_config"].update(TINY_DECODER)
    config["vision_config"] = TINY_V2_VISION
    config["projector_config"].update(input_dim=64, n_embed=64)
    return config


@pytest.fixture(scope="session")
def tiny_v2_checkpoint(tmp_path_factory):
    """A tiny DeepSeek-OCR-2 checkpoint in the official layout."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny-ocr2"), tiny_v2_config(), seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Folder with config.json, tokenizer.json, model-00001-of-000001.safetensors and its index."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny-ocr"), tiny_config(), seed=0)


def run_dsocr(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the real command line (python -m dsocr_cli) and capture its output."""
    return subprocess.run([sys.executable, "-m", "dsocr_cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=300)


# ---- scaling out: one folder converted by one engine, by --gpus engines and by Ray -----------------

SCALE_TINY = ("--mode", "tiny", "--max-new-tokens", "8", "--json", "--keep-raw")


def convert_folder(folder, out, checkpoint, *extra, cpu_engines: int = 2, wait: bool = True):
    """`dsocr convert FOLDER -o OUT/` with the tiny model; --gpus and --ray start `cpu_engines` CPU engines."""
    env = {**os.environ, "DSOCR_CPU_WORKERS": str(cpu_engines)}
    args = [sys.executable, "-m", "dsocr_cli", "convert", str(folder), "-o", f"{out}/", "--model", str(checkpoint),
            *SCALE_TINY, *extra]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def outputs_of(out: Path) -> dict[str, bytes]:
    """Every output file's bytes by name, the manifest left out (it records times)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "dsocr-manifest.jsonl"}


@pytest.fixture(scope="session")
def scale_folder(tmp_path_factory):
    """Six PDFs of 1-3 pages, two in a subfolder."""
    from test_convert import make_pdf

    root = tmp_path_factory.mktemp("scale") / "in"
    (root / "sub").mkdir(parents=True)
    for n in range(6):
        make_pdf(root / ("sub" if n % 3 == 0 else "") / f"doc{n}.pdf", 1 + n % 3)
    return root


@pytest.fixture(scope="session")
def one_engine_outputs(scale_folder, tiny_checkpoint, tmp_path_factory):
    """What one engine in the command's own process writes for `scale_folder`."""
    out = tmp_path_factory.mktemp("one-engine") / "out"
    result = convert_folder(scale_folder, out, tiny_checkpoint, "--device", "cpu")
    assert result.returncode in (0, 1), result.stderr
    return outputs_of(out)


# Running `dsocr` in this process (no interpreter start-up per call).
@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def dsocr(capsys, monkeypatch):
    """dsocr(*args, stdin=None, cwd=None) -> Outcome, as the real command line would exit and print."""
    def run(*args, stdin: str | None = None, cwd=None) -> Outcome:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["dsocr", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return Outcome(code, out, err)
    return run
