"""Options and helpers shared by the commands. Only the CLI talks to the terminal."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from PIL import Image, UnidentifiedImageError
from rich.console import Console


from ..errors import DsocrError
from ..requests import GenerationSettings
from ..preprocess import MODES, Mode, orient, resolve_mode, to_rgb, vision_token_count
from ..prompts import load_prompt, prompt_names

stderr = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line, whatever the width


ModeName = Enum("ModeName", {name: name for name in MODES}, type=str)  # --mode's choices: preprocess.MODES


def mode_help(modes: dict[str, Mode] = MODES) -> str:
    """Each mode's resolution and vision tokens per page: "tiny 512 (73 tokens), ..., gundam 1024 + 640 px tiles."."""
    parts = []
    for mode in modes.values():
        if mode.crop:
            parts.append(f"{mode.name} {mode.base_size} + {mode.image_size} px tiles")
        else:
            count = vision_token_count(mode, mode.image_size, mode.image_size)
            parts.append(f"{mode.name} {mode.image_size} ({count}{' tokens' if not parts else ''})")
    return ", ".join(parts) + "."


ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Checkpoint folder (official layout) or hub repo id, DeepSeek-OCR or DeepSeek-OCR-2. "
                    "Default: $DSOCR_MODEL, else deepseek-ai/DeepSeek-OCR (downloaded on first use).")]
ModeOpt = Annotated[ModeName, typer.Option("--mode", help=mode_help() + " DeepSeek-OCR-2 has one mode, gundam: "
                                           "1024 + 0 or 2-6 768 px tiles (257-1121 tokens).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.")]
MaxTokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Stop a page after this many tokens.")]
NgramOpt = Annotated[int, typer.Option("--ngram-size", min=0, help="No-repeat n-gram guard size; 0 turns it off.")]
NgramWindowOpt = Annotated[int, typer.Option("--ngram-window", min=1, help="Window (generated tokens) of the n-gram guard.")]
ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", envvar="DSOCR_SERVER", help="Send the pages to a running `dsocr serve` at this URL instead of "
                                            "loading a model here (same output).")]
VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", help="At the end, one line on stderr: where the call's time went (import, load, setup, work; "
                            "import and work with --server). convert: also a line per document as it is written.")]
PromptFileOpt = Annotated[Optional[Path], typer.Option(
    "--prompt-file", help=f"Read the prompt from a file. Shipped prompts: {', '.join(prompt_names())}.")]

DEFAULTS = GenerationSettings()


def choices(names) -> str:
    """An option's choices as --help shows them (the value is checked with a one-line error)."""
    return "<" + "|".join(names) + ">"


KV_DTYPES = ("auto", "fp8")  # engine/paged_kv.py maps them to the cache's element type


def _kv_dtype(value: str) -> str:
    if value not in KV_DTYPES:
        raise DsocrError(f"--kv-dtype {value}: use {' or '.join(KV_DTYPES)}")
    return value


KvDtypeOpt = Annotated[str, typer.Option(
    "--kv-dtype", metavar=choices(KV_DTYPES), callback=_kv_dtype,
    help="KV cache: auto (the model's dtype) or fp8 (half the memory and of the bytes decode reads; "
         "output close to, no longer token for token, the exact path's).")]


def warn(message: str) -> None:
    stderr.print(f"dsocr: {message}", markup=False)


def model_kind_of(model: str | None) -> str:
    """v1 or v2, from the checkpoint's config.json (bundled for the released repo ids)."""
    from ..checkpoint import resolve_config

    return resolve_config(model)[0].kind


def mode_of(name: ModeName, model: str | None) -> Mode:
    """The mode --mode names, for the model --model names (v1-only modes fail for v2)."""
    return resolve_mode(name.value, model_kind_of(model))


def read_image(path: Path) -> Image.Image:
    """An image file as RGB with EXIF orientation applied (first frame of animations)."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(orient(image))
    except FileNotFoundError:
        raise DsocrError(f"no such file: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DsocrError(f"cannot read image {path}: {exc}") from None


def resolve_prompt(prompt: str | None, prompt_file: Path | None, default: str) -> str:
    if prompt is not None and prompt_file is not None:
        raise DsocrError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise DsocrError(f"cannot read prompt file {prompt_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise DsocrError(f"prompt file {prompt_file} is not UTF-8 text (byte {exc.start})") from None
    return prompt if prompt is not None else load_prompt(default)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
