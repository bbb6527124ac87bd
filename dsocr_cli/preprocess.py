"""Page image -> model input views, as the official code prepares them.

DeepSeek-OCR (v1) has five modes: tiny/small squash the image to a square; base/large pad it
(aspect kept, grey 127); gundam pads a 1024 global view and, when the image exceeds 640 px on a
side, adds 640 px tiles cut from the image resized to the tile grid that best matches its aspect
ratio (2..9 tiles). DeepSeek-OCR-2 (v2) has one mode, also called gundam here (the dynamic mode of
whichever model): the same 1024 global view and 768 px tiles (2..6, when a side exceeds 768).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .errors import DsocrError

if TYPE_CHECKING:  # numpy and torch load where pixels are made: the CLI starts without them
    import numpy as np
    import torch

PATCH = 16          # SAM patch size
COMPRESSION = 4     # two stride-2 convolutions after SAM: 16 px patches -> one token per 64 px
TILE = 640          # v1 gundam tile side (fixed in the released code)
PAD_COLOUR = (127, 127, 127)  # int(0.5 * 255) per channel


@dataclass(frozen=True)
class Mode:
    name: str
    base_size: int   # global view side
    image_size: int  # tile side (gundam) or the view side
    crop: bool       # gundam: tiles
    model_kind: str = "v1"  # v2: 2..6 tiles, and no newline tokens in the layout

    @property
    def squash(self) -> bool:
        """Small views are resized without keeping the aspect ratio (the released behaviour)."""
        return not self.crop and self.image_size <= 640

    @property
    def max_tiles(self) -> int:
        return 6 if self.model_kind == "v2" else 9


MODES = {m.name: m for m in (
    Mode("tiny", 512, 512, False),
    Mode("small", 640, 640, False),
    Mode("base", 1024, 1024, False),
    Mode("large", 1280, 1280, False),
    Mode("gundam", 1024, TILE, True),
)}
V2_MODES = {"gundam": Mode("gundam", 1024, 768, True, "v2")}


def modes_for(kind: str) -> dict[str, Mode]:
    """The modes of a model kind ("v1" or "v2")."""
    return V2_MODES if kind == "v2" else MODES


def resolve_mode(name: str, kind: str) -> Mode:
    """A mode name for a model kind; v1-only modes asked of v2 fail with one clear line."""
    modes = modes_for(kind)
    if name not in modes:
        if kind == "v2" and name in MODES:
            raise DsocrError(f"--mode {name} is a DeepSeek-OCR (v1) mode; DeepSeek-OCR-2 has one mode: gundam")
        raise DsocrError(f"unknown mode {name!r} (use {', '.join(modes)})")
    return modes[name]


def tokens_per_side(size: int) -> int:
    return math.ceil((size // PATCH) / COMPRESSION)


def tile_grid(width: int, height: int, min_tiles: int = 2, max_tiles: int = 9, tile: int = TILE) -> tuple[int, int]:
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
        elif diff == best_diff and width * height > 0.5 * tile * tile * w_t * h_t:
            best = (w_t, h_t)
    return best


def mode_grid(mode: Mode, width: int, height: int) -> tuple[int, int]:
    """Tile grid (w_t, h_t) for an image; (1, 1) means no tiles."""
    if not mode.crop or (width <= mode.image_size and height <= mode.image_size):
        return (1, 1)
    return tile_grid(width, height, max_tiles=mode.max_tiles, tile=mode.image_size)


def vision_token_count(mode: Mode, width: int, height: int) -> int:
    """Number of `<image>` positions. v1: rows of features + one newline each, tiles, one separator;
    v2: the global view's 256, 144 per tile, one separator (257 + 144k)."""
    g = tokens_per_side(mode.base_size if mode.crop else mode.image_size)
    w_t, h_t = mode_grid(mode, width, height)
    tiles = w_t * h_t if (w_t, h_t) != (1, 1) else 0
    t = tokens_per_side(mode.image_size)
    if mode.model_kind == "v2":
        return g * g + 1 + tiles * t * t
    count = g * (g + 1) + 1
    if tiles:
        count += (t * h_t) * (t * w_t + 1)
    return count


def pad_square(image: Image.Image, side: int) -> Image.Image:
    """ImageOps.pad to side x side in grey 127, with the released offset round(gap / 2) (half to
    even, as Pillow 13; older Pillow truncated), whatever Pillow is installed."""
    resized = ImageOps.contain(image, (side, side), Image.Resampling.BICUBIC)
    if resized.size == (side, side):
        return resized
    out = Image.new("RGB", (side, side), PAD_COLOUR)
    out.paste(resized, (round((side - resized.width) / 2), round((side - resized.height) / 2)))
    return out


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


def pixel_array(image: Image.Image) -> np.ndarray:
    """RGB image -> 3 x H x W uint8 array (normalised later, where the model runs: 4x less to move)."""
    import numpy as np

    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: x / 255, then (x - 0.5) / 0.5, as the official transform."""
    return (pixels.float().div(255) - 0.5) / 0.5


@dataclass
class ImageInput:
    """What the vision encoder needs for one image (uint8 pixels)."""
    global_view: torch.Tensor      # 3 x S x S
    tiles: torch.Tensor | None     # n x 3 x t x t (t = 640 v1, 768 v2), row-major, or None
    grid: tuple[int, int]          # (w_t, h_t); (1, 1) without tiles
    token_count: int


@dataclass
class ViewArrays:
    """ImageInput as numpy arrays: what preprocessing workers make, without torch (their start is
    the first page's wait: importing torch took most of it)."""
    global_view: np.ndarray        # 3 x S x S uint8
    tiles: np.ndarray | None       # n x 3 x t x t uint8
    grid: tuple[int, int]
    token_count: int


def prepare_arrays(image: Image.Image, mode: Mode) -> ViewArrays:
    """RGB image -> global view (+ tiles) pixels for `mode`."""
    width, height = image.size
    grid = mode_grid(mode, width, height)
    if mode.squash:
        view = image.resize((mode.image_size, mode.image_size), Image.Resampling.BICUBIC)
    else:
        side = mode.base_size if mode.crop else mode.image_size
        view = pad_square(image, side)
    tiles = None
    if grid != (1, 1):
        import numpy as np

        w_t, h_t = grid
        t = mode.image_size
        resized = image.resize((t * w_t, t * h_t), Image.Resampling.BICUBIC)
        tiles = np.stack([pixel_array(resized.crop((c * t, r * t, (c + 1) * t, (r + 1) * t)))
                          for r in range(h_t) for c in range(w_t)])
    return ViewArrays(pixel_array(view), tiles, grid, vision_token_count(mode, width, height))


def image_input(arrays: ViewArrays) -> ImageInput:
    import torch

    tiles = torch.from_numpy(arrays.tiles) if arrays.tiles is not None else None
    return ImageInput(torch.from_numpy(arrays.global_view), tiles, arrays.grid, arrays.token_count)


def prepare_image(image: Image.Image, mode: Mode) -> ImageInput:
    """RGB image -> global view (+ tiles) pixels for `mode`, as tensors."""
    return image_input(prepare_arrays(image, mode))
