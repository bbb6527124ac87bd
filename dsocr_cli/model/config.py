"""Model sizes, read from the checkpoint's config.json (as a dict).

The official code reads only the decoder fields and hard-codes the vision sizes; we read
`vision_config` and `projector_config` too, so a tiny config gives a tiny model with the same
key names. Fields the official config does not carry default to the released, hard-coded values.
DeepSeek-OCR-2 (v2) is recognised from its config in the official form (architectures
DeepseekOCR2ForCausalLM, vision model_name deepencoderv2) or the native transformers form
(model_type deepseek_ocr2; native.py reads that one).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


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
class EncoderV2Config:
    """DeepEncoder V2: a Qwen2-0.5B-shaped transformer run as an encoder over SAM tokens + queries."""
    hidden_size: int = 896
    layers: int = 24
    heads: int = 14
    kv_heads: int = 2
    intermediate_size: int = 4864
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads


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


V1, V2 = "v1", "v2"  # DeepSeek-OCR (SAM + CLIP-L), DeepSeek-OCR-2 (SAM + DeepEncoder V2)
V2_ARCHITECTURE = "DeepseekOCR2ForCausalLM"
V2_VISION = "deepencoderv2"
NATIVE_V2 = "deepseek_ocr2"


@dataclass(frozen=True)
class ModelConfig:
    decoder: DecoderConfig
    sam: SamConfig
    clip: ClipConfig | None          # v1 only
    projector_input_dim: int
    encoder: EncoderV2Config | None = None  # v2 only
    # RoPE inverse frequencies rounded to the model dtype (v1's HF path rounds its buffers with
    # .to(bf16)); v2 keeps them in fp32, as its vLLM path and native transformers do.
    round_rope_frequencies: bool = True

    @property
    def kind(self) -> str:
        return V2 if self.encoder is not None else V1

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if d.get("model_type") == NATIVE_V2:
            return native_v2_config(d)
        dec = _decoder_from_dict(d)
        vision = d.get("vision_config") or {}
        widths = vision.get("width") or {}
        sam = _fill(SamConfig, widths.get("sam_vit_b") or {}, tuples=("global_attn_indexes", "downsample_channels"))
        proj = d.get("projector_config") or {}
        if is_v2_dict(d):
            encoder = encoder_v2_from_width(widths.get("qwen2-0-5b") or {})
            # config.json's downsample_channels [512, 1024] is stale: net_3 ends at the encoder width
            sam = replace(sam, downsample_channels=(sam.downsample_channels[0], encoder.hidden_size))
            _check_projector(proj, dec, encoder.hidden_size, f"encoder width {encoder.hidden_size}")
            return cls(decoder=dec, sam=sam, clip=None, projector_input_dim=encoder.hidden_size,
                       encoder=encoder, round_rope_frequencies=False)
        clip = _fill(ClipConfig, widths.get("clip-l-14-224") or {})
        width = clip.width + sam.out_channels
        input_dim = _check_projector(proj, dec, width, f"CLIP width {clip.width} + SAM channels {sam.out_channels}")
        return cls(decoder=dec, sam=sam, clip=clip, projector_input_dim=input_dim)


def is_v2_dict(d: dict) -> bool:
    vision = d.get("vision_config") or {}
    return (V2_ARCHITECTURE in (d.get("architectures") or []) or vision.get("model_name") == V2_VISION
            or d.get("model_type") == NATIVE_V2)


def encoder_v2_from_width(values: dict) -> EncoderV2Config:
    """vision_config.width["qwen2-0-5b"]: the release gives only {"dim": 896}; tiny test models
    give more (layers, heads, kv_heads, intermediate_size)."""
    values = dict(values)
    if "dim" in values:
        values["hidden_size"] = values.pop("dim")
    return _fill(EncoderV2Config, values)


def _check_projector(proj: dict, dec: DecoderConfig, width: int, what: str) -> int:
    if proj.get("projector_type", "linear") != "linear":
        raise ConfigError(f"projector_type {proj['projector_type']!r} is not supported (only 'linear')")
    input_dim = int(proj.get("input_dim", width))
    if input_dim != width:
        raise ConfigError(f"projector input_dim {input_dim} != {what}")
    if int(proj.get("n_embed", dec.hidden_size)) != dec.hidden_size:
        raise ConfigError("projector n_embed must equal the decoder hidden_size")
    return input_dim


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
    return decoder_from_values(values)


def decoder_from_values(values: dict) -> DecoderConfig:
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


# ---- the native transformers form of DeepSeek-OCR-2 (model_type "deepseek_ocr2") -------------

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
