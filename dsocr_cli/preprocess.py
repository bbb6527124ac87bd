"""Page image -> model input views, as the official code prepares them, for the five modes.

tiny/small squash the image to a square; base/large pad it (aspect kept, grey 127); gundam pads a
1024 global view and, when the image exceeds 640 px on a side, adds 640 px tiles cut from the
image resized to the tile grid that best matches its aspect ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

from PIL import Image, ImageOps

if TYPE_CHECKING:  # numpy and torch load where pixels are made: the CLI starts without them
    import torch

PATCH = 16          # SAM patch size
COMPRESSION = 4     # two stride-2 convolutions after SAM: 16 px patches -> one token per 64 px
TILE = 640          # gundam tile side (fixed in the released code)
PAD_COLOUR = (127, 127, 127)  # int(0.5 * 255) per channel


@dataclass(frozen=True)
class Mode:
    name: str
    base_size: int   # global view side
    image_size: int  # tile side (gundam) or the view side
    crop: bool       # gundam: tiles

    @property
    def squash(self) -> bool:
        """Small views are resized without keeping the aspect ratio (the released behaviour)."""
        return not self.crop and self.image_size <= 640


MODES = {m.name: m for m in (
    Mode("tiny", 512, 512, False),
    Mode("small", 640, 640, False),
    Mode("base", 1024, 1024, False),
    Mode("large", 1280, 1280, False),
    Mode("gundam", 1024, TILE, True),
)}


def tokens_per_side(size: int) -> int:
    return math.ceil((size // PATCH) / COMPRESSION)


def tile_grid(width: int, height: int, min_tiles: int = 2, max_tiles: int = 9) -> tuple[int, int]:
    """(tiles across, tiles down) whose aspect ratio is closest to the image's.

    Candidates are ordered by tile count; on an exact tie a larger grid wins only when the image
    area exceeds half of that grid's pixel area (the released rule).
    """
    candidates = sorted({(i, j) for n in range(min_tiles, max_tiles + 1)
                         for i in range(1, n + 1) for j in range(1, n + 1)
                         if min_tiles <= i * j <= max_tiles}, key=lambda r: r[0] * r[1])
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for w_t, h_t in candidates:
        diff = abs(aspect - w_t / h_t)
        if diff < best_diff:
            best, best_diff = (w_t, h_t), diff
        elif diff == best_diff and width * height > 0.5 * TILE * TILE * w_t * h_t:
            best = (w_t, h_t)
    return best


def mode_grid(mode: Mode, width: int, height: int) -> tuple[int, int]:
    """Tile grid (w_t, h_t) for an image; (1, 1) means no tiles."""
    if not mode.crop or (width <= TILE and height <= TILE):
        return (1, 1)
    return tile_grid(width, height)


def vision_token_count(mode: Mode, width: int, height: int) -> int:
    """Number of `<image>` positions: rows of features + one newline each, tiles, one separator."""
    g = tokens_per_side(mode.base_size if mode.crop else mode.image_size)
    count = g * (g + 1) + 1
    w_t, h_t = mode_grid(mode, width, height)
    if (w_t, h_t) != (1, 1):
        t = tokens_per_side(mode.image_size)
        count += (t * h_t) * (t * w_t + 1)
    return count


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB; transparency is composited onto white (pages are paper)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _grey8(image)
    if image.mode == "P" or "transparency" in image.info:  # palette or tRNS transparency -> alpha
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _grey8(image: Image.Image) -> Image.Image:
    """Deep greyscale as 8-bit: 16-bit samples / 257, float samples in 0..1 * 255.

    Mode "I" (32-bit) does not say its depth: it is taken as 16-bit when a sample exceeds 255.
    """
    import numpy as np

    arr = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and arr.max() > 255):
        arr = arr / 257.0
    elif image.mode == "F" and arr.max() <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), "L")


def orient(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as the official loader does."""
    return ImageOps.exif_transpose(image)


def pixels(image: Image.Image) -> torch.Tensor:
    """RGB image -> 3 x H x W uint8 (normalised later, where the model runs: 4x less to move)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: x / 255, then (x - 0.5) / 0.5, as the official transform."""
    return (pixels.float().div(255) - 0.5) / 0.5


@dataclass
class ImageInput:
    """What the vision encoder needs for one image (uint8 pixels)."""
    global_view: torch.Tensor      # 3 x S x S
    tiles: torch.Tensor | None     # n x 3 x 640 x 640, row-major, or None
    grid: tuple[int, int]          # (w_t, h_t); (1, 1) without tiles
    token_count: int


def prepare_image(image: Image.Image, mode: Mode) -> ImageInput:
    """RGB image -> global view (+ tiles) pixels for `mode`."""
    width, height = image.size
    grid = mode_grid(mode, width, height)
    if mode.squash:
        view = image.resize((mode.image_size, mode.image_size), Image.Resampling.BICUBIC)
    else:
        side = mode.base_size if mode.crop else mode.image_size
        view = ImageOps.pad(image, (side, side), color=PAD_COLOUR)
    tiles = None
    if grid != (1, 1):
        import torch


        w_t, h_t = grid
        resized = image.resize((TILE * w_t, TILE * h_t), Image.Resampling.BICUBIC)
        tiles = torch.stack([pixels(resized.crop((c * TILE, r * TILE, (c + 1) * TILE, (r + 1) * TILE)))
                             for r in range(h_t) for c in range(w_t)])
    return ImageInput(pixels(view), tiles, grid, vision_token_count(mode, width, height))
