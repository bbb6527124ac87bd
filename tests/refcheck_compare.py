"""Compare dsocr with a run of the official code (see ../shared/refcheck/README.md).

usage: python tests/refcheck_compare.py RUN_DIR [--prompt TEXT] [--new-tokens N] [--json OUT]

RUN_DIR is what run_reference.py wrote with --save-weights --fp32-forward (weights.safetensors,
config.json, capture.pt, run.json, the input image) and, optionally, fp32_generate.json with the
official model's fp32 greedy ids ("fp32_generated_ids", "fp32_logprobs"). The weights are loaded
through dsocr's own loader (a config.json in the official layout is written beside them, giving
the vision sizes the run used) and every stage is compared in float32.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from dsocr_cli.checkpoint import load_model, official_config
from dsocr_cli.generate import GenerationSettings, generate
from dsocr_cli.model.kv_cache import ContiguousKV
from dsocr_cli.preprocess import MODES, normalize, orient, prepare_image, to_rgb
from dsocr_cli.prompts import build_prompt_ids
from dsocr_cli.tokenizer import Tokenizer

# The sizes run_reference.py --scale tiny builds (SAM 64 wide, 2 blocks; CLIP 2 layers).
TINY_VISION = {"width": {"sam_vit_b": {"width": 64, "layers": 2, "heads": 2, "global_attn_indexes": [1],
                                       "downsample_channels": [512, 1024]},
                         "clip-l-14-224": {"width": 1024, "layers": 2, "heads": 16}}}
DECODER_KEYS = ("hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "n_routed_experts", "n_shared_experts",
                "num_experts_per_tok", "first_k_dense_replace", "vocab_size")


def official_layout_folder(run: Path, scale: str) -> Path:
    """A temp folder in the official layout pointing at the run's weights."""
    folder = Path(tempfile.mkdtemp(prefix="dsocr-refcheck-"))
    config = official_config()
    ref = json.loads((run / "config.json").read_text())
    config.update({k: ref[k] for k in DECODER_KEYS})
    if scale == "tiny":
        config["vision_config"] = TINY_VISION
    (folder / "config.json").write_text(json.dumps(config))
    os.symlink((run / "weights.safetensors").resolve(), folder / "model-00001-of-000001.safetensors")
    Tokenizer.bundled()._tok.save(str(folder / "tokenizer.json"))
    return folder


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def embeds_of(model, prompt, pixels) -> torch.Tensor:
    with torch.no_grad():
        vision = model.embed_image(*(p.to(model.lm_head.weight.dtype) if torch.is_tensor(p) else p for p in pixels))
        return model.embed(torch.tensor([prompt.ids]), torch.tensor([prompt.image_mask]), vision)


def prefill(model, prompt, pixels) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of the whole prompt and the logits of its last 16 positions."""
    dec = model.config.decoder
    n = len(prompt.ids)
    kv = ContiguousKV(dec.num_hidden_layers, 1, dec.num_attention_heads, dec.head_dim, n,
                      model.lm_head.weight.dtype, torch.device("cpu"))
    with torch.no_grad():
        hidden = model.decode(embeds_of(model, prompt, pixels), torch.arange(n)[None], kv)
        return hidden, model.logits(hidden[:, -16:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--prompt", default="<image>\n<|grounding|>Convert the document to markdown. ")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    info = json.loads((args.run / "run.json").read_text())
    cap = torch.load(args.run / "capture.pt")
    mode = MODES[info["mode"]]
    folder = official_layout_folder(args.run, info["scale"])
    model = load_model(folder, torch.device("cpu"), torch.float32)
    tok = Tokenizer.from_file(folder / "tokenizer.json")

    image_path = Path(info["image"])
    image_path = image_path if image_path.is_absolute() else args.run / image_path.name
    image = to_rgb(orient(Image.open(image_path)))
    prepared = prepare_image(image, mode)
    prompt = build_prompt_ids(tok, args.prompt, prepared.token_count)
    report = {"run": str(args.run), "mode": mode.name, "scale": info["scale"], "image_px": list(image.size),
              "grid": list(prepared.grid), "vision_tokens": prepared.token_count,
              "prompt_ids_equal": prompt.ids == cap["input_ids"][0].tolist(),
              "image_mask_equal": prompt.image_mask == cap["images_seq_mask"][0].tolist(),
              # the official infer() casts pixels to bf16: compare ours after the same rounding
              "global_view_max_diff": max_diff(normalize(prepared.global_view).bfloat16(), cap["images_ori"][0])}
    if prepared.tiles is not None:
        report["tiles_max_diff"] = max_diff(normalize(prepared.tiles).bfloat16(), cap["images_crop"])
    # From here on the model is fed the very pixels the official fp32 forward saw.
    pixels = (cap["images_ori"][0].float(), cap["images_crop"].float() if prepared.tiles is not None else None,
              prepared.grid)

    fresh = args.run / "fp32_fresh.pt"
    if fresh.is_file():  # prefill of an official model built in fp32 (see the module docstring)
        ref = torch.load(fresh)
        ref_hidden, ref_logits = ref["final_hidden"], ref["logits_last16"]
    else:  # run_reference.py's fp32 forward: a bf16-built model cast up, RoPE buffer still bf16-rounded
        ref_hidden, ref_logits = cap["fp32_final_hidden"], cap["fp32_prefill_logits_last16"]
    hidden, logits = prefill(model, prompt, pixels)
    report["inputs_embeds_max_diff"] = max_diff(embeds_of(model, prompt, pixels), cap["fp32_inputs_embeds"])
    report["final_hidden_max_diff"] = max_diff(hidden, ref_hidden)
    report["logits_last16_max_diff"] = max_diff(logits, ref_logits)
    report["logits_abs_max"] = float(ref_logits.abs().max())

    # bf16, as the official infer() runs: prefill logits and greedy ids of the captured run.
    model16 = load_model(folder, torch.device("cpu"), torch.bfloat16)
    _, logits16 = prefill(model16, prompt, pixels)
    report["bf16_logits_last16_max_diff"] = max_diff(logits16, cap["prefill_logits_last16"])
    ref_ids = info["generated_ids"]
    with torch.no_grad():
        vision16 = model16.embed_image(*(p.bfloat16() if torch.is_tensor(p) else p for p in pixels))
    out16 = generate(model16, prompt.ids, prompt.image_mask, vision16,
                     GenerationSettings(max_new_tokens=len(ref_ids), ngram_size=0, loop_span=0), eos_id=1)
    # bf16 rounding differs between any two implementations; random weights have near-ties, so
    # greedy paths may part after a few tokens: reported, not required.
    same = next((i for i, (a, b) in enumerate(zip(out16.token_ids, ref_ids)) if a != b), len(ref_ids))
    report["bf16_greedy_same_prefix"] = f"{same}/{len(ref_ids)}"

    gen_file = args.run / "fp32_generate.json"
    if gen_file.is_file():
        ref = json.loads(gen_file.read_text())
        n = len(ref["fp32_generated_ids"])
        with torch.no_grad():
            vision = model.embed_image(*pixels)
        out = generate(model, prompt.ids, prompt.image_mask, vision,
                       GenerationSettings(max_new_tokens=n, ngram_size=0, loop_span=0), eos_id=1, logprobs=True)
        report["greedy_ids_equal"] = out.token_ids == ref["fp32_generated_ids"][:len(out.token_ids)]
        report["greedy_tokens_compared"] = len(out.token_ids)
        report["logprob_max_diff"] = max(abs(a - b) for a, b in zip(out.token_logprobs, ref["fp32_logprobs"]))
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = report["prompt_ids_equal"] and report["image_mask_equal"] and report.get("greedy_ids_equal", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
