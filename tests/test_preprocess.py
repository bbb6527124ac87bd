import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsocr_cli.preprocess import MODES, mode_grid, normalize, prepare_image, tile_grid, to_rgb, vision_token_count

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.parametrize("mode,tokens", [("tiny", 73), ("small", 111), ("base", 273), ("large", 421)])
def test_token_counts_of_single_view_modes(mode, tokens):
    for size in [(640, 480), (1000, 1400), (3000, 200)]:
        assert vision_token_count(MODES[mode], *size) == tokens


@pytest.mark.parametrize("size,grid,tokens", [
    ((1000, 1400), (2, 3), 903), ((2000, 700), (3, 1), 583), ((640, 640), (1, 1), 273),
    ((600, 500), (1, 1), 273), ((641, 640), (2, 2), 693), ((2000, 2000), (3, 3), 1203),
])
def test_gundam_grid_and_tokens(size, grid, tokens):
    assert mode_grid(MODES["gundam"], *size) == grid
    w_t, h_t = grid
    expected = 273 + (10 * h_t * (10 * w_t + 1) if grid != (1, 1) else 0)
    assert vision_token_count(MODES["gundam"], *size) == tokens == expected


def test_tile_grid_matches_official_rule_on_300_sizes():
    official = json.loads((FIXTURES / "official" / "gundam_grids.json").read_text())
    for key, grid in official.items():
        w, h = map(int, key.split("x"))
        assert tile_grid(w, h) == tuple(grid), key


def test_prepare_gundam_shapes_and_range():
    image = Image.new("RGB", (1000, 1400), (255, 0, 0))
    prepared = prepare_image(image, MODES["gundam"])
    assert prepared.global_view.shape == (3, 1024, 1024)
    assert prepared.tiles.shape == (6, 3, 640, 640) and prepared.grid == (2, 3)
    assert prepared.global_view.dtype == torch.uint8
    view = normalize(prepared.global_view)
    assert view.min() >= -1 and view.max() <= 1
    # red page, grey (127) padding left/right of the aspect-kept global view
    assert torch.allclose(view[:, 512, 512], torch.tensor([1.0, -1.0, -1.0]))
    grey = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(view[:, 512, 2], torch.full((3,), grey))


def test_small_modes_squash_large_modes_pad():
    image = Image.new("RGB", (1200, 600), (0, 0, 0))
    small = prepare_image(image, MODES["small"]).global_view
    base = prepare_image(image, MODES["base"]).global_view
    assert small.shape == (3, 640, 640) and small.max() == 0  # all black: squashed, no padding
    assert base.shape == (3, 1024, 1024) and base[:, 10, 512].tolist() == [127, 127, 127]  # grey band on top


def test_to_rgb_conversions():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> paper white
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    assert to_rgb(palette).mode == "RGB"
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (4, 4), 7)).getpixel((1, 1)) == (7, 7, 7)
