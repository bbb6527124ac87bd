"""DeepSeek-OCR-2 in the native transformers form (model_type "deepseek_ocr2"): its weight names
mapped to the official ones (config.py reads its config.json).

transformers >= 5.10 nests the sizes as vision_config.sam_config / .encoder_config / text_config
and renames the weights (vision_tower.*, language_model.*, multi_modal_projector, view_separator,
the routed experts fused into two stacked tensors per layer). Missing fields take the released
values. Saved checkpoints often keep the original names anyway (save_pretrained writes them by
default), so names are mapped per key: an official name passes through unchanged.
"""
from __future__ import annotations

import re
from typing import Callable



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
