"""Requests in, results out: the seam between the document pipeline and whatever runs the model.

`PlainRunner` generates one request at a time with the plain path (generate.py); the batched
engine offers the same `run()` so commands need not care which one they drive.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Protocol

import torch
from PIL import Image

from . import checkpoint
from .errors import DsocrError
from .generate import GenerationSettings, generate, vision_embeddings
from .model.ocr import DeepseekOCR
from .preprocess import Mode, prepare_image
from .prompts import build_prompt_ids
from .tokenizer import EOS_TEXT, Tokenizer

NGRAM_WHITELIST = ("<td>", "</td>")


@dataclass
class OcrRequest:
    image: Image.Image | Callable[[], Image.Image]  # RGB page, or a picklable callable producing it
    prompt: str
    mode: Mode
    key: object = None       # the caller's tag, returned with the result
    max_new_tokens: int | None = None  # fewer tokens than the runner's limit, for this request alone


@dataclass
class OcrResult:
    key: object
    text: str                # decoded with special tokens and grounding tags, trailing EOS removed
    token_ids: list[int]     # generated ids (EOS included when generated)
    finish_reason: str       # eos | length | repetition
    prompt_tokens: int
    vision_tokens: int
    token_logprobs: list[float] | None = None
    error: str | None = None  # set when the request could not be run at all (finish_reason "error")
    page_size: tuple[int, int] | None = None  # the page image's (width, height), when it could be read


def page_image(request: OcrRequest) -> Image.Image:
    return request.image() if callable(request.image) else request.image


class Runner(Protocol):
    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None) -> Iterator[OcrResult]:
        """Results carry their request's key; a batched runner may yield them out of order.
        `settings` replaces the runner's generation settings (same max_new_tokens or fewer) for this run."""

    def close(self) -> None:
        """Release what the runner holds beyond the model (worker processes)."""


def settings_for(tokenizer: Tokenizer, **overrides) -> GenerationSettings:
    """Generation settings with the n-gram whitelist (<td>, </td>) resolved to this tokenizer's ids."""
    whitelist = frozenset(i for i in map(tokenizer.token_id, NGRAM_WHITELIST) if i is not None)
    return GenerationSettings(ngram_whitelist=whitelist, **overrides)


def decode_output(tokenizer: Tokenizer, token_ids: list[int]) -> str:
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    return text[:-len(EOS_TEXT)] if text.endswith(EOS_TEXT) else text


class TextStream:
    """Turns generated ids into text deltas, holding back incomplete UTF-8 sequences.

    Only the ids since the last emitted newline are re-decoded, so streaming stays linear.
    """

    def __init__(self, tokenizer: Tokenizer, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.pending: list[int] = []
        self.sent = 0

    def __call__(self, token: int) -> None:
        self.pending.append(token)
        text = decode_output(self.tokenizer, self.pending)
        if text.endswith("\ufffd") or len(text) <= self.sent:
            return
        self.on_text(text[self.sent:])
        if text.endswith("\n"):
            self.pending, self.sent = [], 0
        else:
            self.sent = len(text)


class PlainRunner:
    """One request at a time through generate.py: the reference the engine is tested against."""

    def __init__(self, model: DeepseekOCR, tokenizer: Tokenizer, settings: GenerationSettings,
                 logprobs: bool = False):
        self.model, self.tokenizer, self.settings, self.logprobs = model, tokenizer, settings, logprobs

    def run_one(self, request: OcrRequest, settings: GenerationSettings | None = None) -> OcrResult:
        page = page_image(request)
        image = prepare_image(page, request.mode)
        prompt = build_prompt_ids(self.tokenizer, request.prompt, image.token_count)
        settings = settings or self.settings
        if request.max_new_tokens is not None:
            settings = replace(settings, max_new_tokens=min(settings.max_new_tokens, request.max_new_tokens))
        out = generate(self.model, prompt.ids, prompt.image_mask, vision_embeddings(self.model, image),
                       settings, eos_id=self.model.config.decoder.eos_token_id, logprobs=self.logprobs)
        return OcrResult(request.key, decode_output(self.tokenizer, out.token_ids), out.token_ids,
                         out.finish_reason, out.prompt_tokens, out.vision_tokens, out.token_logprobs,
                         page_size=page.size)

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None) -> Iterator[OcrResult]:
        for request in requests:
            yield self.run_one(request, settings)

    def close(self) -> None:
        pass


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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DsocrError("--device cuda asked for, but no CUDA device is available (use --device cpu)")
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
    folder = checkpoint.resolve(model)
    tokenizer = checkpoint.load_tokenizer(folder)
    dev = pick_device(device)
    return checkpoint.load_model(folder, dev, pick_dtype(dtype, dev)), tokenizer


def load_runner(model: str | None, device: str = "auto", dtype: str = "auto", logprobs: bool = False,
                max_batch: int | None = None, pages: int | None = None, compile: bool = False,
                **settings) -> Runner:
    """The batched engine over the loaded checkpoint: what every command runs pages through.
    `pages`, when the caller knows how many it will run: a small run gets a batch (and so a KV cache)
    its size instead of the whole GPU, and a single page is prepared in-process rather than by
    workers that take seconds to start."""
    from .engine.engine import Engine

    net, tokenizer = open_model(model, device, dtype)
    workers = preprocess_workers(net.lm_head.weight.device) if pages is None or pages > 1 else 0
    if pages is not None:
        max_batch = min(max_batch or pages, pages)
    return Engine(net, tokenizer, settings_for(tokenizer, **settings), logprobs=logprobs,
                  max_batch=max_batch, workers=workers, compile=compile)


def preprocess_workers(device: torch.device | str, engines: int = 1) -> int:
    """Rendering/preprocessing processes per engine: the host's cores but two, shared by its engines.
    On the CPU the model needs the cores itself, so pages are prepared in its own process."""
    if torch.device(device).type != "cuda":
        return 0
    return min(8, max(0, ((os.cpu_count() or 1) - 2) // engines))
