"""The test-only reference for DeepSeek-OCR-2: transformers' own DeepseekOcr2ForConditionalGeneration
(transformers >= 5.10, the `ref` extra), tiny, random, fp32, saved as a checkpoint dsocr loads.

Only the model, its processor and save_pretrained are used; the greedy loop below is the plainest
one (one token at a time through the KV cache), so nothing of generate()'s logic is in the way.
"""
from __future__ import annotations

import gzip
from importlib.resources import files
from pathlib import Path

import torch

SAM = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1],
           downsample_channels=[32, 64], output_channels=32, mlp_dim=32)
ENCODER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=96, vocab_size=1, rms_norm_eps=1e-6,
               rope_parameters={"rope_type": "default", "rope_theta": 1e6})
TEXT = dict(vocab_size=129280, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, n_routed_experts=8,
            n_shared_experts=1, num_experts_per_tok=2, mlp_layer_types=["dense", "sparse"],
            bos_token_id=0, eos_token_id=1, max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def native_model(seed: int = 0):
    """A tiny native model with seeded weights: matrices N(0, 1/fan_in), norms 1 + 0.1 N, vectors 0.1 N."""
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration

    config = DeepseekOcr2Config(vision_config={"sam_config": SAM, "encoder_config": ENCODER}, text_config=TEXT)
    model = DeepseekOcr2ForConditionalGeneration(config).float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise)
            elif p.dim() == 1 or name.endswith("pos_embed"):
                p.copy_(0.1 * noise)
            else:
                fan_in = p[0].numel() if p.dim() == 4 else p.shape[-1]
                p.copy_(noise / fan_in ** 0.5)
    return model


def save(model, folder: Path, original_names: bool = True) -> Path:
    """save_pretrained (official weight names by default, as transformers 5.23 writes them) + tokenizer.json."""
    model.save_pretrained(folder, save_original_format=original_names)
    (folder / "tokenizer.json").write_bytes(gzip.decompress((files("dsocr_cli.assets") / "tokenizer.json.gz").read_bytes()))
    return folder


def processor(folder: Path):
    """The native processor (PIL image backend) with the DeepSeek tokenizer (it adds BOS itself)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.deepseek_ocr2 import DeepseekOcr2Processor
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token=BOS, eos_token=EOS)
    return DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=tokenizer)


@torch.no_grad()
def greedy(model, input_ids: list[int], pixel_values: torch.Tensor, tiles: torch.Tensor | None,
           steps: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """`steps` greedy tokens (EOS not special), the logits each was chosen from (steps x vocab) and
    the image's vision embeddings as the prefill wrote them into the placeholders."""
    ids = torch.tensor([input_ids])
    out = model(input_ids=ids, pixel_values=pixel_values[None], pixel_values_local=tiles,
                num_local_patches=[0 if tiles is None else tiles.shape[0]], use_cache=True)
    vision = out.image_hidden_states[0]
    tokens, logits = [], []
    for _ in range(steps):
        last = out.logits[0, -1].float()
        logits.append(last)
        tokens.append(int(last.argmax()))
        out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, torch.stack(logits), vision

