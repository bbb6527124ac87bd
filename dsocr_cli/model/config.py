"""Model sizes, read from the checkpoint's config.json (as a dict).

The official code reads only the decoder fields and hard-codes the vision sizes; we read
`vision_config` and `projector_config` too, so a tiny config gives a tiny model with the same
key names. Fields the official config does not carry default to the released, hard-coded values.
"""
from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """config.json describes a model this implementation cannot build."""


@dataclass(frozen=True)
class SamConfig:
    width: int = 768
    layers: int = 12
    heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    downsample_channels: tuple[int, ...] = (512, 1024)
    window_size: int = 14
    mlp_ratio: float = 4.0
    neck_channels: int = 256
    pos_grid: int = 64  # the learned position table is made for 1024 px / 16 px patches
    patch_size: int = 16

    @property
    def out_channels(self) -> int:
        return self.downsample_channels[-1]


@dataclass(frozen=True)
class ClipConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    image_size: int = 224
    patch_size: int = 14

    @property
    def pos_grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 129280
    hidden_size: int = 1280
    intermediate_size: int = 6848
    moe_intermediate_size: int = 896
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    num_experts_per_tok: int = 6
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    bos_token_id: int = 0
    eos_token_id: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, i: int) -> bool:
        return (self.n_routed_experts > 0 and i >= self.first_k_dense_replace
                and i % self.moe_layer_freq == 0)


@dataclass(frozen=True)
class ModelConfig:
    decoder: DecoderConfig
    sam: SamConfig
    clip: ClipConfig
    projector_input_dim: int

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        dec = _decoder_from_dict(d)
        vision = d.get("vision_config") or {}
        widths = vision.get("width") or {}
        sam = _fill(SamConfig, widths.get("sam_vit_b") or {}, tuples=("global_attn_indexes", "downsample_channels"))
        clip = _fill(ClipConfig, widths.get("clip-l-14-224") or {})
        proj = d.get("projector_config") or {}
        if proj.get("projector_type", "linear") != "linear":
            raise ConfigError(f"projector_type {proj['projector_type']!r} is not supported (only 'linear')")
        input_dim = int(proj.get("input_dim", clip.width + sam.out_channels))
        if input_dim != clip.width + sam.out_channels:
            raise ConfigError(f"projector input_dim {input_dim} != CLIP width {clip.width} + SAM channels {sam.out_channels}")
        if int(proj.get("n_embed", dec.hidden_size)) != dec.hidden_size:
            raise ConfigError("projector n_embed must equal the decoder hidden_size")
        return cls(decoder=dec, sam=sam, clip=clip, projector_input_dim=input_dim)


def _fill(klass, values: dict, tuples: tuple[str, ...] = ()):
    """Build a dataclass from the keys it knows (config files carry unrelated keys too)."""
    fields = klass.__dataclass_fields__
    kwargs = {}
    for key, value in values.items():
        if key in fields and value is not None:
            _check_number(key, fields[key].default, value)
            kwargs[key] = tuple(value) if key in tuples else value
    return klass(**kwargs)


def _check_number(key: str, default, value) -> None:
    """A size or rate where the config has a number (a string there would fail deep in the model)."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return
    wanted = int if isinstance(default, int) else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ConfigError(f"{key} should be a {'whole ' if wanted is int else ''}number, not {value!r}")


def _decoder_from_dict(d: dict) -> DecoderConfig:
    # HF builds the decoder from the top-level fields (vLLM from the nested copy); same values.
    values = dict(d.get("language_config") or {})
    values.update({k: v for k, v in d.items() if not isinstance(v, dict)})
    if values.get("use_mla", False):
        raise ConfigError("use_mla=true (multi-head latent attention) is not part of DeepSeek-OCR")
    if values.get("topk_method", "greedy") != "greedy" or values.get("scoring_func", "softmax") != "softmax":
        raise ConfigError("only greedy top-k routing with softmax scores is supported")
    if "hidden_size" not in values:
        raise ConfigError("config.json has no decoder hidden_size")
    dec = _fill(DecoderConfig, values)
    if dec.num_key_value_heads != dec.num_attention_heads:
        raise ConfigError("grouped-query attention is not part of DeepSeek-OCR")
    return dec
