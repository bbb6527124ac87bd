"""The repetition guard and loop detector of generate.py, per row of a batch on the device.

Both ask one question of a row's generated tokens: for a shift d, how many of the newest tokens
equal the token d before each? A row keeps that count for every shift it can need (`runs`, column
d-1) and each step updates it from the new token alone. An n-gram of size s would repeat where the
last s-1 tokens occurred d tokens earlier (runs >= s-1, d within the window): the token that
followed them then, d back from the end of `history`, is banned. The output loops with period p
where the last span-p tokens repeat p earlier (runs >= span-p). `history` holds the last `width`
tokens, oldest first, padded with -1, which equals no token. Every row has its own n-gram size and
window (`sizes`, `windows`: a retried page runs beside first attempts); results equal
banned_tokens() and is_looping() on the row's generated list (tested).

On a GPU each of the two operations is one Triton kernel (they were ~30 small torch kernels a
step, which bounds a lone page's decode); the torch versions run elsewhere and are the reference.
"""
from __future__ import annotations

import torch

from ..model.fused import _kernels_for, triton
from ..requests import GenerationSettings

if triton is not None:
    import triton.language as tl


def guard_shape(settings: list[GenerationSettings]) -> tuple[int, int]:
    """(history width, shifts counted) that rows under any of `settings` need."""
    width = max(max(s.ngram_window, s.loop_span) for s in settings)
    shifts = max(max(s.ngram_window - s.ngram_size + 1 if s.ngram_size else 0, s.loop_span // 4) for s in settings)
    return max(width, 1), max(shifts, 1)


def ban_repeated_ngrams_reference(logits, history, runs, sizes, windows, allowed):
    shifts, width = runs.shape[1], history.shape[1]
    d = torch.arange(1, shifts + 1, device=logits.device)
    followers = history[:, width - d]
    sizes, windows = sizes[:, None], windows[:, None]
    banned = (sizes > 0) & (runs >= sizes - 1) & (d <= windows - sizes + 1) & (followers >= 0)
    banned &= ~allowed[followers.clamp(min=0)]
    # Scatter only True values (the others go to a spare last column), so a follower that is banned
    # at one shift and not at another stays banned.
    vocab = logits.shape[1]
    mask = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
    mask.scatter_(1, torch.where(banned, followers, vocab), True)
    logits.masked_fill_(mask[:, :vocab], float("-inf"))


def ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, runs: torch.Tensor, sizes: torch.Tensor,
                        windows: torch.Tensor, allowed: torch.Tensor) -> None:
    """Set to -inf, in place, each row's logits (B x V) of tokens that would repeat an n-gram of its
    size within its window; `allowed` (V, bool) marks the whitelist."""
    if not (_kernels_for(logits) and logits.stride(1) == 1 and history.is_contiguous() and runs.is_contiguous()):
        return ban_repeated_ngrams_reference(logits, history, runs, sizes, windows, allowed)
    rows, shifts = runs.shape
    _ban_kernel[(rows,)](logits, logits.stride(0), history, runs, sizes, windows, allowed, shifts,
                         WIDTH=history.shape[1], BLOCK=triton.next_power_of_2(shifts))


def advance_reference(history, runs, token, span):
    width, shifts = history.shape[1], runs.shape[1]
    d = torch.arange(1, shifts + 1, device=history.device)
    runs.copy_(torch.where(history[:, width - d] == token[:, None], runs + 1, 0))
    history.copy_(torch.cat([history[:, 1:], token[:, None]], dim=1))
    if span <= 0:
        return torch.zeros(history.shape[0], dtype=torch.bool, device=history.device)
    periods = d[:span // 4]
    return (runs[:, :span // 4] >= span - periods).any(dim=-1)


def advance(history: torch.Tensor, runs: torch.Tensor, token: torch.Tensor, span: int) -> torch.Tensor:
    """Append each row's new token (B) to its history and counts, in place; B bools: the row now
    loops (its last `span` tokens repeat with a period of at most span // 4; span 0: never)."""
    if not (_kernels_for(history) and history.is_contiguous() and runs.is_contiguous() and token.is_contiguous()):
        return advance_reference(history, runs, token, span)
    rows, width = history.shape
    loops = torch.empty(rows, dtype=torch.bool, device=history.device)
    _advance_kernel[(rows,)](history, runs, token, loops, runs.shape[1], span, WIDTH=width,
                             BLOCK_W=triton.next_power_of_2(width), BLOCK=triton.next_power_of_2(runs.shape[1]))
    return loops


if triton is not None:
    @triton.jit
    def _ban_kernel(logits, logit_stride, history, runs, sizes, windows, allowed, shifts,
                    WIDTH: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        size = tl.load(sizes + row)
        window = tl.load(windows + row)
        d = 1 + tl.arange(0, BLOCK)
        inside = d <= shifts
        run = tl.load(runs + row * shifts + d - 1, mask=inside, other=-1)
        follower = tl.load(history + row * WIDTH + WIDTH - d, mask=inside, other=-1)
        last_shift = tl.where(size > 0, window - size + 1, 0)  # size 0: the guard is off
        banned = inside & (d <= last_shift) & (run >= size - 1) & (follower >= 0)
        exempt = tl.load(allowed + follower, mask=banned, other=0)
        tl.store(logits + row * logit_stride + follower, float("-inf"), mask=banned & (exempt == 0))

    @triton.jit
    def _advance_kernel(history, runs, token, loops, shifts, span,
                        WIDTH: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        new = tl.load(token + row)
        d = 1 + tl.arange(0, BLOCK)
        inside = d <= shifts
        before = tl.load(history + row * WIDTH + WIDTH - d, mask=inside, other=-1)
        run = tl.load(runs + row * shifts + d - 1, mask=inside, other=0)
        run = tl.where(before == new, run + 1, 0)
        periodic = inside & (d <= span // 4) & (run >= span - d)
        j = tl.arange(0, BLOCK_W)
        shifted = tl.load(history + row * WIDTH + j + 1, mask=j + 1 < WIDTH, other=0)
        shifted = tl.where(j == WIDTH - 1, new, shifted)
        tl.debug_barrier()  # every thread has read the row before any overwrites it
        tl.store(runs + row * shifts + d - 1, run, mask=inside)
        tl.store(history + row * WIDTH + j, shifted, mask=j < WIDTH)
        tl.store(loops + row, tl.max(periodic.to(tl.int32), axis=0) > 0)
