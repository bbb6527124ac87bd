"""Greedy generation for one image, the plain path every faster path must match token for token.

Stops at EOS (`eos`), at max_new_tokens (`length`), or when the output has fallen into an exact
loop (`repetition`). A no-repeat n-gram guard in the style of the official vLLM recipe bans, over
the generated tokens inside a sliding window, any token that would repeat an n-gram.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .model.kv_cache import ContiguousKV
from .model.ocr import DeepseekOCR
from .preprocess import ImageInput, normalize
from .requests import GenerationSettings

EOS, LENGTH, REPETITION = "eos", "length", "repetition"


def finish_reason(generated: list[int], eos_id: int, settings: GenerationSettings, looping: bool,
                  context_left: int | None = None) -> str | None:
    """Why generation stops after the last token of `generated`, or None to go on. `context_left`:
    the positions the model has after the prompt (max_position_embeddings - prompt): a page that
    reaches it stops as `length`, as at max_new_tokens (the model cannot see further back)."""
    if not settings.ignore_eos:
        if generated[-1] == eos_id:
            return EOS
        if looping:
            return REPETITION
    limit = settings.max_new_tokens if context_left is None else min(settings.max_new_tokens, context_left)
    return LENGTH if len(generated) >= limit else None


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str
    token_logprobs: list[float] | None = None
    prompt_tokens: int = 0
    vision_tokens: int = 0


def banned_tokens(generated: list[int], size: int, window: int, whitelist: frozenset[int]) -> set[int]:
    """Tokens that would complete an n-gram already seen in the last `window` generated tokens."""
    n = len(generated)
    if size <= 0 or n < size:
        return set()
    prefix = generated[n - size + 1:]
    banned = {generated[i + size - 1] for i in range(max(0, n - window), n - size + 1)
              if generated[i:i + size - 1] == prefix}
    return banned - whitelist


def is_looping(generated: list[int], span: int) -> bool:
    """True when the last `span` tokens repeat with a period of at most span // 4."""
    if span <= 0 or len(generated) < span:
        return False
    tail = np.asarray(generated[-span:])
    return any((tail[p:] == tail[:-p]).all() for p in range(1, span // 4 + 1))


@torch.inference_mode()
def vision_embeddings(model: DeepseekOCR, image: ImageInput) -> torch.Tensor:
    """Run DeepEncoder on one image's views and lay the features out as the decoder reads them."""
    device = model.lm_head.weight.device
    tiles = normalize(image.tiles.to(device)) if image.tiles is not None else None
    return model.embed_image(normalize(image.global_view.to(device)), tiles, image.grid)


@torch.inference_mode()
def generate(model: DeepseekOCR, prompt_ids: list[int], image_mask: list[bool], image_embeds: torch.Tensor,
             settings: GenerationSettings, eos_id: int, logprobs: bool = False,
             on_token: Callable[[int], None] | None = None) -> Generation:
    """Greedy decoding of one prompt; image_embeds fill the masked positions (vision_embeddings()).
    `on_token` sees each token as it is chosen."""
    device = model.lm_head.weight.device
    dtype = model.lm_head.weight.dtype
    dec = model.config.decoder
    ids = torch.tensor([prompt_ids], device=device)
    mask = torch.tensor([image_mask], device=device)
    x = model.embed(ids, mask, image_embeds)
    n_prompt = len(prompt_ids)
    cache = ContiguousKV(dec.num_hidden_layers, 1, dec.num_attention_heads, dec.head_dim,
                         n_prompt + settings.max_new_tokens, dtype, device)
    positions = torch.arange(n_prompt, device=device)[None]
    generated: list[int] = []
    scores: list[float] = []
    while True:
        hidden = model.decode(x, positions, cache)
        cache.advance(x.shape[1])
        logits = model.logits(hidden[:, -1])[0]
        banned = banned_tokens(generated, settings.ngram_size, settings.ngram_window, settings.ngram_whitelist)
        if banned:
            logits_pick = logits.clone()
            logits_pick[list(banned)] = float("-inf")
        else:
            logits_pick = logits
        token = int(logits_pick.argmax())
        generated.append(token)
        if logprobs:
            scores.append(float(torch.log_softmax(logits, dim=-1)[token]))
        if on_token is not None:
            on_token(token)
        finish = finish_reason(generated, eos_id, settings, is_looping(generated, settings.loop_span),
                               dec.max_position_embeddings - n_prompt)
        if finish:
            break
        x = model.embed(torch.tensor([[token]], device=device))
        positions = positions[:, -1:] + 1
    return Generation(generated, finish, scores if logprobs else None, n_prompt, sum(image_mask))
