"""DeepSeek-OCR-2 in the native transformers form (model_type "deepseek_ocr2"): its config.json
read into our ModelConfig, and its weight names mapped to the official ones.

transformers >= 5.10 nests the sizes as vision_config.sam_config / .encoder_config / text_config
and renames the weights (vision_tower.*, language_model.*, multi_modal_projector, view_separator,
the routed experts fused into two stacked tensors per layer). Missing fields take the released
values. Saved checkpoints often keep the original names anyway (save_pretrained writes them by
default), so names are mapped per key: an official name passes through unchanged.
"""
from __future__ import annotations

import re
from typing import Callable
from dataclasses import replace

from .config import ConfigError, EncoderV2Config, ModelConfig, SamConfig, _fill, decoder_from_values

_SAM_FIELDS = {"hidden_size": "width", "num_hidden_layers": "layers", "num_attention_heads": "heads",
               "output_channels": "neck_channels"}
_ENCODER_FIELDS = {"num_hidden_layers": "layers", "num_attention_heads": "heads", "num_key_value_heads": "kv_heads"}


def native_v2_config(d: dict) -> ModelConfig:
    vision = d.get("vision_config") or {}
    sam_values = _renamed(vision.get("sam_config") or {}, _SAM_FIELDS)
    sam = _fill(SamConfig, sam_values, tuples=("global_attn_indexes", "downsample_channels"))
    if "mlp_dim" in sam_values:
        if sam_values["mlp_dim"] % sam.width:
            raise ConfigError("sam_config.mlp_dim must be a multiple of its hidden_size")
        sam = replace(sam, mlp_ratio=sam_values["mlp_dim"] / sam.width)
    sam = replace(sam, pos_grid=int(sam_values.get("image_size", 1024)) // sam.patch_size)
    enc_values = _renamed(vision.get("encoder_config") or {}, _ENCODER_FIELDS)
    enc_values["rope_theta"] = _rope_theta(enc_values, EncoderV2Config.rope_theta)
    encoder = _fill(EncoderV2Config, enc_values)
    if sam.out_channels != encoder.hidden_size:
        raise ConfigError(f"SAM ends at {sam.out_channels} channels but the encoder is {encoder.hidden_size} wide")
    text = dict(d.get("text_config") or {})
    text["rope_theta"] = _rope_theta(text, 10000.0)
    kinds = text.pop("mlp_layer_types", None)
    if kinds is not None:
        dense = kinds.index("sparse") if "sparse" in kinds else len(kinds)
        if any(k != "sparse" for k in kinds[dense:]):
            raise ConfigError("mlp_layer_types must be dense layers followed by sparse ones")
        text["first_k_dense_replace"] = dense
    if "hidden_size" not in text:
        raise ConfigError("config.json (deepseek_ocr2) has no text_config.hidden_size")
    dec = decoder_from_values(text)
    return ModelConfig(decoder=dec, sam=sam, clip=None, projector_input_dim=encoder.hidden_size,
                       encoder=encoder, round_rope_frequencies=False)


def _renamed(values: dict, names: dict) -> dict:
    return {names.get(k, k): v for k, v in values.items()}


def _rope_theta(values: dict, default: float) -> float:
    rope = values.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"rope_type {rope['rope_type']!r} is not supported (only 'default')")
    return float(rope.get("rope_theta", values.get("rope_theta", default)))


# ---- weight names -------------------------------------------------------------------------------

_SAM = "model.vision_tower.sam_encoder."
_RENAMES = [(re.compile(pattern), repl) for pattern, repl in [
    (rf"^{_SAM}layers\.(\d+)\.layer_norm([12])\.", r"model.sam_model.blocks.\1.norm\2."),
    (rf"^{_SAM}layers\.(\d+)\.", r"model.sam_model.blocks.\1."),
    (rf"^{_SAM}patch_embed\.projection\.", "model.sam_model.patch_embed.proj."),
    (rf"^{_SAM}pos_embed$", "model.sam_model.pos_embed"),
    (rf"^{_SAM}neck\.conv1\.", "model.sam_model.neck.0."),
    (rf"^{_SAM}neck\.layer_norm1\.", "model.sam_model.neck.1."),
    (rf"^{_SAM}neck\.conv2\.", "model.sam_model.neck.2."),
    (rf"^{_SAM}neck\.layer_norm2\.", "model.sam_model.neck.3."),
    (rf"^{_SAM}proj\.conv1\.", "model.sam_model.net_2."),
    (rf"^{_SAM}proj\.conv2\.", "model.sam_model.net_3."),
    (r"^model\.vision_tower\.vision_encoder\.", "model.qwen2_model.model.model."),
    (r"^model\.vision_tower\.query_(768|1024)(_resolution)?\.", r"model.qwen2_model.query_\1."),
    (r"^model\.multi_modal_projector\.", "model.projector.layers."),
    (r"^model\.view_separator$", "model.view_seperator"),
    (r"^model\.language_model\.", "model."),
]]
_FUSED = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$")


def official_name(key: str) -> str:
    """A native weight name -> the official one (official names are returned unchanged)."""
    for pattern, repl in _RENAMES:
        key, n = pattern.subn(repl, key)
        if n:
            break
    return key


def official_parts(key: str, shape: Callable[[], tuple[int, ...]]) -> list[tuple[str, tuple]]:
    """(official name, index into the stored tensor) for each official tensor a stored one holds:
    one for a plain tensor, two per expert for a fused gate_up_proj (gate rows first), one per
    expert for a fused down_proj. `shape()` gives the stored tensor's shape (asked only when fused)."""
    name = official_name(key)
    fused = _FUSED.match(name)
    if not fused:
        return [(name, ())]
    prefix, kind = fused.groups()
    shape = shape()
    if kind == "down_proj":
        return [(f"{prefix}.{e}.down_proj.weight", (e,)) for e in range(shape[0])]
    half = shape[1] // 2
    return [part for e in range(shape[0]) for part in
            [(f"{prefix}.{e}.gate_proj.weight", (e, slice(0, half))),
             (f"{prefix}.{e}.up_proj.weight", (e, slice(half, 2 * half)))]]
