"""The repetition guard and loop detector of generate.py, vectorised over a batch on the device.

Each row keeps the last `width` generated tokens in `history`, oldest first, padded with -1 on the
left. -1 never equals a real token, so padding can neither match an n-gram nor look periodic: the
results equal banned_tokens() and is_looping() on the row's generated list (tested).
"""
from __future__ import annotations

import torch


def ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, size: int, window: int,
                        allowed: torch.Tensor) -> torch.Tensor:
    """logits (B x V) with -inf where a token would repeat an n-gram seen in the last `window`
    generated tokens; `allowed` (V, bool) marks the whitelist."""
    if size <= 0:
        return logits
    recent = history[:, -window:]
    prefix = recent[:, -(size - 1):] if size > 1 else recent[:, :0]
    # candidate n-grams start at 0 .. window - size; their first size-1 tokens against the prefix
    starts = recent.unfold(1, size - 1, 1)[:, :window - size + 1] if size > 1 else None
    if starts is None:
        matches = torch.ones_like(recent[:, :window], dtype=torch.bool)
    else:
        matches = (starts == prefix[:, None, :]).all(dim=-1)
    followers = recent[:, size - 1:]  # the token that completed each candidate
    banned = matches & (followers >= 0) & ~allowed[followers.clamp(min=0)]
    # Scatter only True values (non-banned candidates go to a spare last column), so duplicate
    # followers can never overwrite a ban.
    vocab = logits.shape[1]
    mask = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
    mask.scatter_(1, torch.where(banned, followers, vocab), True)
    return logits.masked_fill(mask[:, :vocab], float("-inf"))


def looping(history: torch.Tensor, span: int) -> torch.Tensor:
    """B bools: the last `span` tokens repeat with a period of at most span // 4."""
    if span <= 0:
        return torch.zeros(history.shape[0], dtype=torch.bool, device=history.device)
    tail = history[:, -span:]
    periods = torch.arange(1, span // 4 + 1, device=history.device)
    index = torch.arange(span, device=history.device)[None, :] + periods[:, None]   # P x span
    valid = index < span
    shifted = tail[:, index.clamp(max=span - 1)]                                      # B x P x span
    periodic = ((shifted == tail[:, None, :]) | ~valid).all(dim=-1)
    return periodic.any(dim=-1) & (tail[:, 0] >= 0)  # a full span of real tokens, as is_looping needs
