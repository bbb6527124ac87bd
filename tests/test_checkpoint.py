import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsocr_cli.checkpoint import (CheckpointError, build_empty, load_model, official_config, official_shapes,
                                  resolve, weight_files)
from dsocr_cli.model.config import ConfigError, ModelConfig

OFFICIAL_INDEX = Path(__file__).parent.parent / "fixtures" / "official" / "model.safetensors.index.json"


def test_official_config_implies_exactly_the_official_keys_and_sizes():
    index = json.loads(OFFICIAL_INDEX.read_text())
    shapes = official_shapes(build_empty(ModelConfig.from_dict(official_config())))
    assert len(shapes) == 2710
    assert set(shapes) == set(index["weight_map"])
    assert sum(math.prod(s) for s in shapes.values()) * 2 == index["metadata"]["total_size"]  # bf16 bytes
    assert shapes["model.layers.1.mlp.experts.63.gate_proj.weight"] == (896, 1280)
    assert shapes["model.layers.1.mlp.experts.0.down_proj.weight"] == (1280, 896)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (6848, 1280)
    assert shapes["model.layers.1.mlp.shared_experts.up_proj.weight"] == (1792, 1280)
    assert shapes["model.sam_model.blocks.2.attn.rel_pos_h"] == (127, 64)
    assert shapes["model.sam_model.blocks.3.attn.rel_pos_w"] == (27, 64)
    assert shapes["model.vision_model.embeddings.position_embedding.weight"] == (257, 1024)
    assert shapes["model.projector.layers.weight"] == (1280, 2048)


def test_tiny_checkpoint_round_trips_through_the_loader(tiny_checkpoint):
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    stored = load_file(tiny_checkpoint / "model-00001-of-000001.safetensors")
    attn = model.model.layers[1].self_attn.wqkv.weight
    h = attn.shape[1]
    assert torch.equal(attn[h:2 * h], stored["model.layers.1.self_attn.k_proj.weight"])
    experts = model.model.layers[1].mlp.experts
    i = experts.intermediate
    assert torch.equal(experts.w_gate_up[3, i:], stored["model.layers.1.mlp.experts.3.up_proj.weight"])
    assert torch.equal(experts.w_down[7], stored["model.layers.1.mlp.experts.7.down_proj.weight"])
    assert model.lm_head.weight.dtype == torch.float32
    assert load_model(tiny_checkpoint, torch.device("cpu"), torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_partial_checkpoint_says_what_is_missing(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ck")
    shard = folder / "model-00001-of-000001.safetensors"
    tensors = load_file(shard)
    del tensors["model.layers.1.mlp.experts.5.up_proj.weight"]
    save_file(tensors, shard)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="lacks 1 of"):
        load_model(folder, torch.device("cpu"), torch.float32)


def test_missing_shard_and_wrong_shape(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ck")
    (folder / "model-00001-of-000001.safetensors").rename(folder / "elsewhere.bin")
    with pytest.raises(CheckpointError, match="missing model-00001-of-000001.safetensors"):
        weight_files(folder)
    folder2 = _copy(tiny_checkpoint, tmp_path / "ck2")
    config = json.loads((folder2 / "config.json").read_text())
    config["moe_intermediate_size"] = 48
    (folder2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(folder2, torch.device("cpu"), torch.float32)


def test_resolve_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DSOCR_MODEL", raising=False)
    with pytest.raises(CheckpointError, match="model folder not found"):
        resolve(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="could not fetch someone/model"):
        resolve("someone/model")
    monkeypatch.setenv("DSOCR_MODEL", str(tmp_path))
    assert resolve(None) == tmp_path


def test_unsupported_configs_are_refused():
    config = official_config()
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({**config, "use_mla": True})
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({**config, "projector_config": {"projector_type": "mlp_gelu"}})
