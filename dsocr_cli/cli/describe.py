"""`dsocr describe IMAGES...`: a detailed caption of each image."""
from __future__ import annotations

from .. import prompts
from ..grounding import strip_grounding
from .batch import Answer, Batch, FromRawOpt, ImagesArg, JsonOpt, ModelChoice, OutputOpt, Reading
from .common import DEFAULTS, DeviceOpt, DtypeOpt, MaxTokensOpt, ModelOpt, ModeName, ModeOpt, PromptFileOpt, resolve_prompt


def describe(
    images: ImagesArg = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    prompt_file: PromptFileOpt = None,
    mode: ModeOpt = ModeName.gundam,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    max_new_tokens: MaxTokensOpt = DEFAULTS.max_new_tokens,
) -> None:
    """Describe each image in detail (prompt: describe); an empty caption fails (exit 1)."""
    batch = Batch(images, from_raw, output, ".json" if as_json else ".txt")
    batch.read(resolve_prompt(None, prompt_file, prompts.DESCRIBE), ModelChoice(model, device, dtype, mode, max_new_tokens))
    batch.emit(caption_answer, as_json)


def caption_answer(reading: Reading) -> Answer:
    caption = strip_grounding(reading.raw)
    if not caption:
        return Answer(error="the model gave no caption", record={"error": "no caption", "raw": reading.raw})
    return Answer(caption + "\n", {"caption": caption})
