"""The reference runner: one request at a time through generate.py, what the engine is tested against."""
from __future__ import annotations

from typing import Iterable, Iterator

from ..generate import generate, vision_embeddings
from ..model.ocr import DeepseekOCR
from ..preprocess import prepare_image
from ..prompts import build_prompt_ids
from ..requests import (PENDING, GenerationSettings, OcrRequest, OcrResult, TokenCallback, decode_output, page_image,
                        settings_of)
from ..tokenizer import Tokenizer


class PlainRunner:
    """One request at a time through generate.py: the reference the engine is tested against."""
    engines = 1
    devices: list[str] = []
    pages_done: list[int] = []
    live_requests = True

    def __init__(self, model: DeepseekOCR, tokenizer: Tokenizer, settings: GenerationSettings,
                 logprobs: bool = False):
        self.model, self.tokenizer, self.settings, self.logprobs = model, tokenizer, settings, logprobs

    def run_one(self, request: OcrRequest, settings: GenerationSettings | None = None,
                on_token: TokenCallback | None = None) -> OcrResult:
        page = page_image(request)
        image = prepare_image(page, request.mode)
        prompt = build_prompt_ids(self.tokenizer, request.prompt, image.token_count)
        settings = settings_of(request, settings or self.settings)
        out = generate(self.model, prompt.ids, prompt.image_mask, vision_embeddings(self.model, image),
                       settings, eos_id=self.model.config.decoder.eos_token_id, logprobs=self.logprobs,
                       on_token=on_token and (lambda token: on_token(request.key, token)))
        return OcrResult(request.key, decode_output(self.tokenizer, out.token_ids), out.token_ids,
                         out.finish_reason, out.prompt_tokens, out.vision_tokens, out.token_logprobs,
                         page_size=page.size)

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None) -> Iterator[OcrResult]:
        for request in requests:
            if request is not PENDING:  # every earlier result is out already: nothing to wait for
                yield self.run_one(request, settings, on_token)

    def close(self) -> None:
        pass
