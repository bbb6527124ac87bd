"""`dsocr describe IMAGES...`: a detailed caption of each image."""
from __future__ import annotations

from .. import prompts
from ..grounding import strip_grounding
from .batch import Answer, Batch, FromRawOpt, ImagesArg, JsonOpt, OutputOpt, Reading
from .common import PromptFileOpt, resolve_prompt
from .options import READING, ModelChoice, model_options


@model_options(*READING)
def describe(
    choice: ModelChoice,
    images: ImagesArg = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    prompt_file: PromptFileOpt = None,
) -> None:
    """Describe each image in detail (prompt: describe); an empty caption fails (exit 1)."""
    batch = Batch(images, from_raw, output, ".json" if as_json else ".txt")
    batch.read(resolve_prompt(None, prompt_file, prompts.DESCRIBE), choice)
    batch.emit(caption_answer, as_json)


def caption_answer(reading: Reading) -> Answer:
    caption = strip_grounding(reading.raw)
    if not caption:
        return Answer(error="the model gave no caption", record={"error": "no caption", "raw": reading.raw})
    return Answer(caption + "\n", {"caption": caption})
