"""DeepSeek-OCR-2: config recognition, official keys and shapes, loading, tiling, modes, the engine and
the commands end to end on a tiny v2 checkpoint (CPU). Exactness against transformers: test_v2_exact.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from dsocr_cli.checkpoint import V2_MODEL, load_model, official_config
from dsocr_cli.engine.engine import Engine
from dsocr_cli.errors import DsocrError
from dsocr_cli.model.config import ModelConfig
from dsocr_cli.model.encoder_v2 import flow_mask
from dsocr_cli.model.native import official_name
from dsocr_cli.preprocess import V2_MODES, mode_grid, prepare_image, resolve_mode, vision_token_count
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.requests import OcrRequest, settings_for
from dsocr_cli.tokenizer import Tokenizer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "ocr2-checkpoint"
MODE = V2_MODES["gundam"]


def test_the_bundled_v2_config_is_the_official_file():
    bundled = json.dumps(official_config(V2_MODEL), sort_keys=True)
    assert bundled == json.dumps(json.loads((FIXTURE / "config.json").read_text()), sort_keys=True)


def test_info_keys_for_the_official_v2_config_are_exactly_the_official_index(tmp_path, dsocr):
    (tmp_path / "config.json").write_bytes((FIXTURE / "config.json").read_bytes())
    outcome = dsocr("info", "--model", tmp_path, "--keys", "--json")
    assert outcome.code == 0, outcome.stderr
    listed = json.loads(outcome.stdout)
    index = json.loads((FIXTURE / "model.safetensors.index.json").read_text())
    assert set(listed["keys"]) == set(index["weight_map"]) and len(listed["keys"]) == 2707
    shapes = {k: tuple(v) for k, v in listed["shapes"].items()}
    layer = "model.qwen2_model.model.model.layers.23."
    assert shapes["model.sam_model.net_3.weight"] == (896, 512, 3, 3)
    assert shapes["model.projector.layers.weight"] == (1280, 896) and shapes["model.projector.layers.bias"] == (1280,)
    assert shapes["model.qwen2_model.query_768.weight"] == (144, 896)
    assert shapes["model.qwen2_model.query_1024.weight"] == (256, 896)
    assert shapes[layer + "self_attn.q_proj.weight"] == (896, 896) and shapes[layer + "self_attn.q_proj.bias"] == (896,)
    assert shapes[layer + "self_attn.k_proj.weight"] == (128, 896) and shapes[layer + "self_attn.v_proj.bias"] == (128,)
    assert shapes[layer + "self_attn.o_proj.weight"] == (896, 896)
    assert shapes[layer + "mlp.gate_proj.weight"] == (4864, 896) and shapes[layer + "mlp.down_proj.weight"] == (896, 4864)
    assert shapes["model.qwen2_model.model.model.norm.weight"] == (896,)
    assert sum(math.prod(s) for s in shapes.values()) == 3_389_119_360
    assert "model.image_newline" not in shapes


def test_v2_is_recognised_from_either_marker_and_reads_the_real_net3_width():
    config = official_config(V2_MODEL)
    assert ModelConfig.from_dict(config).kind == "v2"
    del config["architectures"]
    parsed = ModelConfig.from_dict(config)
    assert parsed.kind == "v2" and parsed.sam.out_channels == 896 and parsed.encoder.rope_theta == 1e6
    config["vision_config"]["model_name"] = "deeplip_b_l"
    with pytest.raises(ValueError):  # now it claims v1, and 896 is no CLIP + SAM width
        ModelConfig.from_dict(config)
    assert ModelConfig.from_dict(official_config()).kind == "v1"


def test_native_v2_config_and_weight_names():
    native = {"model_type": "deepseek_ocr2", "vision_config": {
        "sam_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_dim": 3072,
                       "downsample_channels": [512, 896], "output_channels": 256, "image_size": 1024},
        "encoder_config": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                           "num_key_value_heads": 2, "intermediate_size": 4864,
                           "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}},
        "text_config": {**{k: v for k, v in official_config(V2_MODEL)["language_config"].items()
                           if k != "first_k_dense_replace"}, "mlp_layer_types": ["dense"] + ["sparse"] * 11}}
    assert ModelConfig.from_dict(native) == ModelConfig.from_dict(official_config(V2_MODEL))
    assert official_name("model.vision_tower.sam_encoder.layers.3.layer_norm1.weight") == "model.sam_model.blocks.3.norm1.weight"
    assert official_name("model.vision_tower.sam_encoder.neck.layer_norm2.bias") == "model.sam_model.neck.3.bias"
    assert official_name("model.vision_tower.query_768.weight") == "model.qwen2_model.query_768.weight"
    assert official_name("model.language_model.layers.4.mlp.gate.weight") == "model.layers.4.mlp.gate.weight"
    assert official_name("model.sam_model.net_3.weight") == "model.sam_model.net_3.weight"


def test_flow_mask_visual_bidirectional_and_blind_to_queries_queries_causal():
    mask = flow_mask(3, torch.device("cpu")).int().tolist()
    assert mask == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                    [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("size, grid", [((850, 1100), (2, 3)), ((1224, 1584), (2, 3)), ((2480, 3508), (2, 3)),
                                        ((1000, 683), (3, 2)), ((3000, 500), (6, 1)), ((769, 768), (2, 2)),
                                        ((1250, 1000), (2, 2)), ((2500, 2000), (3, 2)), ((700, 700), (1, 1)),
                                        ((500, 400), (1, 1)), ((768, 768), (1, 1)), ((768, 3000), (1, 4))])
def test_v2_tile_grids_and_placeholder_counts(size, grid):
    """The released rule's examples (OCR2.md section 6): 2..6 tiles of 768, none when both sides <= 768."""
    assert mode_grid(MODE, *size) == grid
    tiles = 0 if grid == (1, 1) else grid[0] * grid[1]
    assert vision_token_count(MODE, *size) == 257 + 144 * tiles


def test_v2_views_are_1024_global_and_768_tiles():
    prepared = prepare_image(Image.new("RGB", (1000, 683), "white"), MODE)
    assert prepared.global_view.shape == (3, 1024, 1024) and prepared.tiles.shape == (6, 3, 768, 768)
    assert prepared.token_count == 1121


def test_modes_per_model_kind():
    assert resolve_mode("gundam", "v2") is MODE and resolve_mode("gundam", "v1").image_size == 640
    with pytest.raises(DsocrError, match="DeepSeek-OCR-2 has one mode: gundam"):
        resolve_mode("base", "v2")


def test_mixed_stored_dtypes_are_cast_per_tensor(tiny_v2_checkpoint, tmp_path):
    """The released file mixes bf16 and fp32 tensors: each is read with its own dtype and cast."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in tiny_v2_checkpoint.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    shard = next(folder.glob("*.safetensors"))
    tensors = load_file(shard)
    mixed = {k: (v.bfloat16() if "qwen2_model" in k or k.endswith("embed_tokens.weight") else v) for k, v in tensors.items()}
    save_file(mixed, str(shard), metadata={"format": "pt"})
    model = load_model(folder, torch.device("cpu"), torch.float32)
    query = model.model.qwen2_model.query_768.weight
    assert query.dtype == torch.float32
    assert torch.equal(query, tensors["model.qwen2_model.query_768.weight"].bfloat16().float())
    assert torch.equal(model.lm_head.weight, tensors["lm_head.weight"])


def _page(size, text):
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((40, 40), text, fill="black", font_size=32)
    return image


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_v2_engine_gives_the_plain_path_tokens(tiny_v2_checkpoint, device):
    """Continuous batching with views batched by size (globals together, tiles together), and CUDA
    graphs on a GPU, change nothing (fp32)."""
    model = load_model(tiny_v2_checkpoint, torch.device(device), torch.float32)
    tokenizer = Tokenizer.from_file(tiny_v2_checkpoint / "tokenizer.json")
    settings = settings_for(tokenizer, max_new_tokens=6)
    sizes = [(500, 400), (1600, 800), (800, 1500), (600, 300)]
    requests = lambda: [OcrRequest(_page(s, f"page {i}"), "<image>\nFree OCR.", MODE, key=i)  # noqa: E731
                        for i, s in enumerate(sizes)]
    plain = {r.key: r.token_ids for r in PlainRunner(model, tokenizer, settings).run(requests())}
    engine = Engine(model, tokenizer, settings, max_batch=3, workers=0, kv_bytes=256 * 1024 ** 2)
    assert bool(engine.graphs) == (device == "cuda")
    batched = {r.key: (r.token_ids, r.vision_tokens) for r in engine.run(requests())}
    assert {k: v[0] for k, v in batched.items()} == plain
    assert [batched[i][1] for i in range(4)] == [257, 545, 545, 257]


def test_ocr_and_convert_run_a_v2_checkpoint(tiny_v2_checkpoint, tmp_path, dsocr):
    import fitz

    image = tmp_path / "page.png"
    _page((1000, 683), "Hello v2").save(image)
    outcome = dsocr("ocr", image, "--model", tiny_v2_checkpoint, "--device", "cpu", "--max-new-tokens", "5", "--json")
    assert outcome.code in (0, 1), outcome.stderr
    record = json.loads(outcome.stdout)
    assert record["mode"] == "gundam" and record["vision_tokens"] == 1121 and len(record["token_ids"]) == 5
    pdf = tmp_path / "doc.pdf"
    doc = fitz.open()
    doc.new_page(width=300, height=200).insert_text((20, 40), "A v2 page")
    doc.save(pdf)
    out = tmp_path / "out"
    outcome = dsocr("convert", pdf, "-o", f"{out}/", "--model", tiny_v2_checkpoint, "--device", "cpu",
                    "--max-new-tokens", "5", "--json")
    assert outcome.code in (0, 1), outcome.stderr
    layout = json.loads((out / "doc_layout.json").read_text())
    assert layout["meta"]["mode"] == "gundam" and layout["pages"][0]["size"] == [600, 400]
    assert layout["pages"][0]["finish_reason"] == "length" and (out / "doc.md").is_file()


def test_v1_only_mode_with_v2_is_one_line(tiny_v2_checkpoint, tmp_path, dsocr):
    image = tmp_path / "page.png"
    _page((300, 200), "x").save(image)
    outcome = dsocr("ocr", image, "--model", tiny_v2_checkpoint, "--device", "cpu", "--mode", "base")
    assert outcome.code == 2
    assert outcome.stderr.strip() == ("dsocr: error: --mode base is a DeepSeek-OCR (v1) mode; "
                                      "DeepSeek-OCR-2 has one mode: gundam")


def test_bench_runs_a_v2_checkpoint_in_its_mode(tiny_v2_checkpoint, dsocr):
    outcome = dsocr("bench", "--model", tiny_v2_checkpoint, "--device", "cpu", "--pages", "2", "--output-tokens", "3",
                    "--json")
    assert outcome.code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["mode"] == "gundam" and report["errors"] == 0


def test_bench_refuses_an_unknown_model_kind(dsocr):
    outcome = dsocr("bench", "--random-weights", "--model-kind", "v3")
    assert outcome.code == 2 and "--model-kind takes v1 or v2" in outcome.stderr
