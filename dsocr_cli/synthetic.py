"""Synthetic document pages for benchmarks: A4 at 144 dpi (1190 x 1684, so gundam cuts 2 x 3 tiles).

A module of its own, needing only Pillow: the engine's workers unpickle a page's maker from here
without importing the benchmark (and torch's model code) with it, and `bench --server` sends
them without loading torch at all.
"""
from __future__ import annotations

import random

from PIL import Image, ImageDraw

A4 = (1190, 1684)
WORDS = "the of model page table figure results data layout vision token text compression decoder".split()


def synthetic_page(seed: int, size: tuple[int, int] = A4) -> Image.Image:
    """A document-like page: a title, paragraphs of words, a ruled table and a grey figure."""
    rng = random.Random(seed)
    w, h = size
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    draw.text((w // 10, h // 20), f"Synthetic page {seed}", fill="black", font_size=36)
    y = h // 8
    while y < h * 0.5:
        draw.text((w // 10, y), " ".join(rng.choice(WORDS) for _ in range(12)), fill=(20, 20, 20), font_size=20)
        y += 30
    for r in range(6):
        for c in range(4):
            x0, y0 = w // 10 + c * 200, int(h * 0.55) + r * 36
            draw.rectangle([x0, y0, x0 + 200, y0 + 36], outline="black")
            draw.text((x0 + 8, y0 + 8), f"{rng.random() * 100:.1f}", fill="black", font_size=18)
    draw.rectangle([w // 10, int(h * 0.8), int(w * 0.7), int(h * 0.95)], fill=(180, 180, 200), outline="black")
    return page
