"""`dsocr ocr IMAGE`: one image, one prompt, the model's answer."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..grounding import parse_blocks, strip_grounding, to_pixels
from ..errors import DsocrError
from ..runner import OcrRequest, TextStream, load_runner
from .common import (DEFAULTS, DeviceOpt, DtypeOpt, MaxTokensOpt, ModelOpt, ModeName, ModeOpt, NgramOpt,
                     NgramWindowOpt, PromptFileOpt, mode_of, print_json, read_image, resolve_prompt)


def ocr(
    image: Annotated[Path, typer.Argument(help="Image file (png, jpg, tiff, webp, bmp, gif).")],
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (text, ids, counts, finish reason).")] = False,
    logprobs: Annotated[bool, typer.Option("--logprobs", help="With --json: add each generated token's log-probability.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Keep special tokens and grounding tags in the text.")] = False,
) -> None:
    """OCR one image with a prompt (default: free OCR). Text streams to stdout when it is a terminal."""
    picture = read_image(image)
    text_prompt = resolve_prompt(prompt, prompt_file, "ocr-layout" if layout else "free-ocr")
    runner = load_runner(model, device, dtype, logprobs=logprobs, max_batch=1, max_new_tokens=max_new_tokens,
                         ngram_size=ngram_size, ngram_window=ngram_window)
    # Grounding tags are removed after the fact, so only tag-free output streams as it comes.
    stream = not as_json and sys.stdout.isatty() and (raw or "<|grounding|>" not in text_prompt)
    on_token = None
    if stream:
        text_stream = TextStream(runner.tokenizer, lambda delta: (sys.stdout.write(delta), sys.stdout.flush()))
        on_token = lambda key, token: text_stream(token)  # noqa: E731
    request = OcrRequest(picture, text_prompt, mode_of(mode), key=str(image))
    result = next(iter(runner.run([request], on_token=on_token)))
    if result.error:
        raise DsocrError(f"{image}: {result.error}")
    text = result.text if raw else strip_grounding(result.text)
    if not as_json:
        sys.stdout.write("\n" if stream else text + "\n")
        return
    width, height = picture.size
    out = {"image": str(image), "mode": mode.value, "text": text, "finish_reason": result.finish_reason,
           "prompt_tokens": result.prompt_tokens, "vision_tokens": result.vision_tokens,
           "token_ids": result.token_ids, "size": [width, height]}
    if "<|det|>" in result.text:
        out["blocks"] = [{"label": b.label, "text": b.text, "boxes": [list(bx) for bx in b.boxes],
                          "boxes_px": [list(to_pixels(bx, width, height)) for bx in b.boxes]}
                         for b in parse_blocks(result.text)]
    if logprobs:
        out["token_logprobs"] = result.token_logprobs
    print_json(out)
