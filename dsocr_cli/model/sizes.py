"""Parameter counts from the config alone: each part's tensor shapes added up, as the modules in
sam.py, clip.py, encoder_v2.py, decoder.py and ocr.py make them. `dsocr info` prints these without
importing torch (tests check them against a model built on the meta device)."""
from __future__ import annotations

from .config import ClipConfig, DecoderConfig, EncoderV2Config, ModelConfig, SamConfig


def linear(inputs: int, outputs: int, bias: bool = True) -> int:
    return inputs * outputs + (outputs if bias else 0)


def conv(inputs: int, outputs: int, kernel: int, bias: bool = False) -> int:
    return inputs * outputs * kernel * kernel + (outputs if bias else 0)


def sam_parameters(cfg: SamConfig) -> int:
    dim, grid, head_dim = cfg.width, cfg.pos_grid, cfg.width // cfg.heads
    mlp = int(dim * cfg.mlp_ratio)
    block_body = 2 * 2 * dim + linear(dim, 3 * dim) + linear(dim, dim) + linear(dim, mlp) + linear(mlp, dim)
    blocks = sum(block_body + 2 * (2 * (grid if i in cfg.global_attn_indexes else cfg.window_size) - 1) * head_dim
                 for i in range(cfg.layers))
    neck = cfg.neck_channels
    mid, out = cfg.downsample_channels
    return (conv(3, dim, cfg.patch_size, bias=True) + grid * grid * dim + blocks
            + conv(dim, neck, 1) + 2 * neck + conv(neck, neck, 3) + 2 * neck + conv(neck, mid, 3) + conv(mid, out, 3))


def clip_parameters(cfg: ClipConfig) -> int:
    width, mlp = cfg.width, int(cfg.width * cfg.mlp_ratio)
    embeddings = width + conv(3, width, cfg.patch_size) + (cfg.pos_grid ** 2 + 1) * width
    layer = 2 * 2 * width + linear(width, 3 * width) + linear(width, width) + linear(width, mlp) + linear(mlp, width)
    return embeddings + 2 * width + cfg.layers * layer


def swiglu(hidden: int, intermediate: int) -> int:
    return linear(hidden, 2 * intermediate, bias=False) + linear(intermediate, hidden, bias=False)


def encoder_v2_parameters(cfg: EncoderV2Config) -> int:
    hidden, q_width, kv_width = cfg.hidden_size, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    layer = 2 * hidden + linear(hidden, q_width + 2 * kv_width) + linear(q_width, hidden, bias=False) \
        + swiglu(hidden, cfg.intermediate_size)
    return (144 + 256) * hidden + cfg.layers * layer + hidden  # two query banks, the layers, the final norm


def expert_parameters(dec: DecoderConfig) -> int:
    """One routed expert's weights."""
    return swiglu(dec.hidden_size, dec.moe_intermediate_size)


def decoder_layer_parameters(dec: DecoderConfig, i: int) -> int:
    hidden = dec.hidden_size
    attention = linear(hidden, 3 * hidden, bias=False) + linear(hidden, hidden, bias=False)
    if dec.is_moe_layer(i):
        mlp = (dec.n_routed_experts * hidden + dec.n_routed_experts * expert_parameters(dec)
               + swiglu(hidden, dec.moe_intermediate_size * dec.n_shared_experts))
    else:
        mlp = swiglu(hidden, dec.intermediate_size)
    return 2 * hidden + attention + mlp


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Totals per part, and the decoder parameters one token actually uses (its top-k experts,
    no embedding table: a lookup is not compute)."""
    dec = config.decoder
    hidden, v2 = dec.hidden_size, config.kind == "v2"
    layers = range(dec.num_hidden_layers)
    decoder = sum(decoder_layer_parameters(dec, i) for i in layers) + hidden + linear(hidden, dec.vocab_size, bias=False)
    unused_experts = sum(1 for i in layers if dec.is_moe_layer(i)) * expert_parameters(dec) \
        * (dec.n_routed_experts - dec.num_experts_per_tok)
    vision = ({"deepencoder_v2": encoder_v2_parameters(config.encoder)} if v2
              else {"clip": clip_parameters(config.clip)})
    counts = {
        "sam": sam_parameters(config.sam),
        **vision,
        "projector": linear(config.projector_input_dim, hidden) + (1 if v2 else 2) * hidden,  # + newline, separator
        "embedding": dec.vocab_size * hidden,
        "decoder": decoder,
    }
    return {"total": sum(counts.values()), **counts, "active_per_token": decoder - unused_experts}
