"""`dsocr ocr IMAGES...`: each image with one prompt, the model's answer."""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Optional

import typer

from ..grounding import parse_blocks, strip_grounding, to_pixels
from .batch import Answer, Batch, FromRawOpt, ImagesArg, ModelChoice, OutputOpt, Reading
from .common import (DEFAULTS, DeviceOpt, DtypeOpt, MaxTokensOpt, ModelOpt, ModeName, ModeOpt, NgramOpt,
                     NgramWindowOpt, PromptFileOpt, resolve_prompt)
from .serve import ServerOpt


def ocr(
    images: ImagesArg = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Prompt text; <image> marks where the image goes.")] = None,
    prompt_file: PromptFileOpt = None,
    layout: Annotated[bool, typer.Option("--layout", help="Ask for text blocks with boxes (the ocr-layout prompt).")] = False,
    mode: ModeOpt = ModeName.gundam,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    max_new_tokens: MaxTokensOpt = DEFAULTS.max_new_tokens,
    ngram_size: NgramOpt = DEFAULTS.ngram_size,
    ngram_window: NgramWindowOpt = DEFAULTS.ngram_window,
    as_json: Annotated[bool, typer.Option("--json", help="JSON per image (text, ids, counts, finish reason, blocks).")] = False,
    logprobs: Annotated[bool, typer.Option("--logprobs", help="With --json: add each generated token's log-probability.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Keep special tokens and grounding tags in the text.")] = False,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    server: ServerOpt = None,
) -> None:
    """OCR images with a prompt (default: free OCR). One image's text streams to stdout when it is a terminal."""
    text_prompt = resolve_prompt(prompt, prompt_file, "ocr-layout" if layout else "free-ocr")
    batch = Batch(images, from_raw, output, ".json" if as_json else ".txt")
    # Grounding tags are removed after the fact, so only tag-free output streams as it comes.
    stream = (not as_json and output is None and from_raw is None and len(batch.readings) == 1
              and sys.stdout.isatty() and (raw or "<|grounding|>" not in text_prompt))
    batch.read(text_prompt, ModelChoice(model, device, dtype, mode, max_new_tokens, ngram_size, ngram_window, logprobs, server),
               on_text=_write_now if stream else None)
    answer = lambda reading: text_answer(reading, raw, mode)  # noqa: E731
    batch.emit((lambda reading: replace(answer(reading), text="\n")) if stream else answer, as_json)


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def text_answer(reading: Reading, raw: bool, mode: ModeName) -> Answer:
    text = reading.raw if raw else strip_grounding(reading.raw)
    record = {"mode": mode.value, "text": text}
    if reading.size is not None:
        record["size"] = list(reading.size)
    result = reading.result
    if result is not None:
        record.update(finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                      vision_tokens=result.vision_tokens, token_ids=result.token_ids)
    if "<|det|>" in reading.raw:
        record["blocks"] = [{"label": b.label, "text": b.text, "boxes": [list(bx) for bx in b.boxes],
                             "boxes_px": [list(to_pixels(bx, *reading.size)) for bx in b.boxes] if reading.size else None}
                            for b in parse_blocks(reading.raw)]
    if result is not None and result.token_logprobs is not None:
        record["token_logprobs"] = result.token_logprobs
    return Answer(text + "\n", record)
