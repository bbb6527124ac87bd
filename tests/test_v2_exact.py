"""DeepSeek-OCR-2 exactness against transformers' native DeepseekOcr2ForConditionalGeneration.

A tiny random fp32 model is built with transformers and saved with save_pretrained (official weight
names, as transformers writes them by default); dsocr loads that folder. Per case: the native
processor's prompt ids and image-token count equal ours; the model math is compared on identical
pixel tensors (the native processor pads the global view at floor(gap / 2), the official code at
round-half-even, checked separately below); 24 greedy tokens are identical and the logits they were
chosen from agree within 1e-4. Figures are printed (pytest -s) for README's Exactness section.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

import v2_reference as ref
from dsocr_cli.checkpoint import load_model, load_tokenizer
from dsocr_cli.generate import GenerationSettings, generate, vision_embeddings
from dsocr_cli.model.kv_cache import ContiguousKV
from dsocr_cli.preprocess import PAD_COLOUR, V2_MODES, normalize, pad_square, pixel_array, prepare_image
from dsocr_cli.prompts import build_prompt_ids

MODE = V2_MODES["gundam"]
STEPS = 24
DOCUMENT = "<image>\n<|grounding|>Convert the document to markdown."
FREE = "<image>\nFree OCR."
LAST = "Describe this image in detail.\n<image>"
LOCATE = "Locate <|ref|>the title<|/ref|> in the image.<image>"
CASES = {  # name: (width, height, prompt); tiles as the official grid rule gives them
    "small-untiled": ((320, 240), FREE),
    "large-untiled-portrait": ((700, 768), DOCUMENT),
    "2-tiles-landscape": ((1600, 800), DOCUMENT),
    "3-tiles-portrait": ((800, 2400), LAST),
    "4-tiles": ((1250, 1000), FREE),
    "6-tiles-portrait": ((850, 1100), DOCUMENT),
    "6-tiles-landscape": ((1000, 683), LOCATE),
    "2-tiles-portrait-image-last": ((800, 1500), LAST),
}
TILES = {"small-untiled": 0, "large-untiled-portrait": 0, "2-tiles-landscape": 2, "3-tiles-portrait": 3,
         "4-tiles": 4, "6-tiles-portrait": 6, "6-tiles-landscape": 6, "2-tiles-portrait-image-last": 2}


def page(size: tuple[int, int], seed: int) -> Image.Image:
    """Noise under a few dark blocks: every pixel matters, so a shifted or resampled view shows."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 20))
        draw.rectangle([x, y, x + 40, y + 20], fill=(0, 0, 0))
    return image


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    native = ref.native_model(seed=0)
    folder = ref.save(native, tmp_path_factory.mktemp("ocr2-native") / "ckpt")
    ours = load_model(folder, torch.device("cpu"), torch.float32)
    return native, ours, load_tokenizer(folder), ref.processor(folder)


@torch.no_grad()
def forced_logits(model, prompt, vision: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Our logits at the prompt's last position and after each of tokens[:-1] (one prefill)."""
    ids = torch.tensor([prompt.ids + tokens[:-1]])
    mask = torch.tensor([prompt.image_mask + [False] * (len(tokens) - 1)])
    dec = model.config.decoder
    cache = ContiguousKV(dec.num_hidden_layers, 1, dec.num_attention_heads, dec.head_dim, ids.shape[1], torch.float32,
                         torch.device("cpu"))
    hidden = model.decode(model.embed(ids, mask, vision), torch.arange(ids.shape[1])[None], cache)
    return model.logits(hidden[0, len(prompt.ids) - 1:])


def floor_padded(image: Image.Image, side: int = 1024) -> Image.Image:
    """The native processor's global view: as the official one, but offset floor(gap / 2)."""
    resized = ImageOps.contain(image, (side, side), Image.Resampling.BICUBIC)
    out = Image.new("RGB", (side, side), PAD_COLOUR)
    out.paste(resized, ((side - resized.width) // 2, (side - resized.height) // 2))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_v2_matches_transformers(reference, name):
    native, ours, tokenizer, processor = reference
    size, prompt_text = CASES[name]
    image = page(size, seed=len(name))
    prepared = prepare_image(image, MODE)
    k = 0 if prepared.tiles is None else prepared.tiles.shape[0]
    assert k == TILES[name]
    prompt = build_prompt_ids(tokenizer, prompt_text, prepared.token_count)

    theirs = processor(images=[image], text=prompt_text)
    assert theirs["input_ids"][0] == prompt.ids
    assert list(theirs["num_local_patches"]) == [k]
    assert prepared.token_count == 257 + 144 * k == sum(i == 128815 for i in prompt.ids)
    their_global = torch.from_numpy(np.asarray(theirs["pixel_values"][0]))
    assert torch.allclose(their_global, normalize(torch.from_numpy(pixel_array(floor_padded(image)))), atol=1e-6)
    if k:
        their_tiles = torch.from_numpy(np.stack([np.asarray(t) for t in theirs["pixel_values_local"]]))
        assert torch.allclose(their_tiles, normalize(prepared.tiles), atol=1e-6)

    global_view = normalize(prepared.global_view)
    tiles = normalize(prepared.tiles) if k else None
    vision = vision_embeddings(ours, prepared)
    settings = GenerationSettings(max_new_tokens=STEPS, ngram_size=0, loop_span=0, ignore_eos=True)
    mine = generate(ours, prompt.ids, prompt.image_mask, vision, settings, eos_id=1)
    their_tokens, their_logits, their_vision = ref.greedy(native, prompt.ids, global_view, tiles, STEPS)
    logits = forced_logits(ours, prompt, vision, mine.token_ids)
    vision_diff = float((vision - their_vision).abs().max())
    logit_diff = float((logits - their_logits).abs().max())
    print(f"\n{name}: {size[0]}x{size[1]}, {k} tiles, {len(prompt.ids)} prompt ids ({prepared.token_count} image), "
          f"vision max diff {vision_diff:.2e}, logits max diff {logit_diff:.2e} over {STEPS} steps")
    assert mine.token_ids == their_tokens
    assert logit_diff <= 1e-4


def test_official_pad_offset_rounds_half_to_even():
    """768 x 301 scaled to 1024 x 401: gap 623, official offset round(311.5) = 312 (native: 311)."""
    image = Image.new("RGB", (768, 301), (255, 255, 255))
    view = np.asarray(pad_square(image, 1024))
    rows = np.flatnonzero((view == 255).all(axis=(1, 2)))
    assert rows[0] == 312 and rows[-1] == 312 + 401 - 1
    assert (np.asarray(floor_padded(image)) == 255).all(axis=(1, 2)).argmax() == 311


def test_native_weight_names_load_to_the_same_model(reference, tmp_path):
    """save_pretrained(save_original_format=False): vision_tower.*, language_model.*, fused experts."""
    native, ours, _, _ = reference
    folder = ref.save(native, tmp_path / "native-names", original_names=False)
    from safetensors import safe_open

    with safe_open(next(folder.glob("*.safetensors")), framework="pt") as f:
        assert "model.language_model.layers.1.mlp.experts.gate_up_proj" in set(f.keys())
    again = load_model(folder, torch.device("cpu"), torch.float32)
    theirs = dict(again.named_parameters())
    assert all(torch.equal(p, theirs[name]) for name, p in ours.named_parameters())
