"""SAM's window partition, fused with the LayerNorm before it and the residual add after it (GPU).

A windowed block cuts the normalised token grid into zero-padded window x window tiles, attends
inside each, and stitches the tiles back. In torch that is the norm, a pad, a permuting copy in,
a permuting copy out, a crop and the add: six passes over the block's activations, for 8 of SAM's
12 blocks. Here the norm writes straight into the window layout (zeros where the padding is) and
the add reads straight from it: two passes. (With the residual stream made contiguous, sam.py,
one 1024 view's vision pass went from 4.92 to 3.66 ms on an H200; the two were measured together.)
The torch versions beside them are the reference and what runs on the CPU: the norm is torch's
arithmetic (fp32, cast once), the add is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .fused import _kernels_for, triton

if triton is not None:
    import triton.language as tl


def window_grid(h: int, w: int, window: int) -> tuple[int, int]:
    """Windows down and across a padded h x w grid."""
    return -(-h // window), -(-w // window)


def norm_into_windows_reference(x, weight, bias, eps, window):
    b, h, w, c = x.shape
    nh, nw = window_grid(h, w, window)
    y = F.layer_norm(x, (c,), weight, bias, eps)
    y = F.pad(y, (0, 0, 0, nw * window - w, 0, nh * window - h))  # padding tokens take part in attention, as released
    return y.view(b, nh, window, nw, window, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def norm_into_windows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, window: int) -> torch.Tensor:
    """B x h x w x C tokens -> LayerNorm, zero-padded to whole windows, as (B*nh*nw) x window x window x C
    (windows row-major per image)."""
    if not (_kernels_for(x) and x.is_contiguous() and weight.dtype == x.dtype):
        return norm_into_windows_reference(x, weight, bias, eps, window)
    b, h, w, c = x.shape
    nh, nw = window_grid(h, w, window)
    out = x.new_empty(b * nh * nw, window, window, c)
    _norm_into_windows_kernel[(out.numel() // c,)](x, weight, bias, out, h, w, nh, nw, c, eps,
                                                   WINDOW=window, BLOCK=triton.next_power_of_2(c))
    return out


def add_from_windows_reference(x, windows, window):
    b, h, w, c = x.shape
    nh, nw = window_grid(h, w, window)
    y = windows.view(b, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * window, nw * window, c)
    return x + y[:, :h, :w].contiguous()


def add_from_windows(x: torch.Tensor, windows: torch.Tensor, window: int) -> torch.Tensor:
    """x + the windows stitched back into x's B x h x w x C grid (their padding dropped)."""
    if not (_kernels_for(x) and x.is_contiguous() and windows.is_contiguous() and windows.dtype == x.dtype):
        return add_from_windows_reference(x, windows, window)
    b, h, w, c = x.shape
    nh, nw = window_grid(h, w, window)
    out = torch.empty_like(x)
    _add_from_windows_kernel[(b * h * w,)](x, windows, out, h, w, nh, nw, c, WINDOW=window,
                                           BLOCK=triton.next_power_of_2(c))
    return out


if triton is not None:
    @triton.jit
    def _norm_into_windows_kernel(x_ptr, w_ptr, b_ptr, out_ptr, h, w, nh, nw, width, eps,
                                  WINDOW: tl.constexpr, BLOCK: tl.constexpr):
        slot = tl.program_id(0)  # one token of one window, in the output's order
        across = slot % WINDOW
        down = (slot // WINDOW) % WINDOW
        window = slot // (WINDOW * WINDOW)
        row = (window // nw) % nh * WINDOW + down
        col = window % nw * WINDOW + across
        image = window // (nh * nw)
        inside = (row < h) & (col < w)
        cols = tl.arange(0, BLOCK)
        ok = cols < width
        present = cols < tl.where(inside, width, 0)  # a padding slot reads nothing
        x = tl.load(x_ptr + ((image * h + row) * w + col) * width + cols, mask=present, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / width
        centred = tl.where(ok, x - mean, 0.0)
        rstd = tl.math.rsqrt(tl.sum(centred * centred, axis=0) / width + eps)
        gain = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        shift = tl.load(b_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        y = tl.where(inside, centred * rstd * gain + shift, 0.0)
        tl.store(out_ptr + slot * width + cols, y.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _add_from_windows_kernel(x_ptr, win_ptr, out_ptr, h, w, nh, nw, width,
                                 WINDOW: tl.constexpr, BLOCK: tl.constexpr):
        token = tl.program_id(0)  # one token of x, row-major
        col = token % w
        row = (token // w) % h
        image = token // (h * w)
        slot = ((image * nh + row // WINDOW) * nw + col // WINDOW) * WINDOW * WINDOW + (row % WINDOW) * WINDOW + col % WINDOW
        cols = tl.arange(0, BLOCK)
        ok = cols < width
        x = tl.load(x_ptr + token * width + cols, mask=ok, other=0.0).to(tl.float32)
        y = tl.load(win_ptr + slot * width + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + token * width + cols, (x + y).to(out_ptr.dtype.element_ty), mask=ok)
