"""`dsocr locate IMAGES... TEXT`: where a text is in each image, as boxes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import prompts
from ..annotate import annotate_page
from ..errors import DsocrError
from ..grounding import parse_blocks, to_pixels
from ..writers import save_image
from .batch import Answer, Batch, FromRawOpt, ImagesArg, OutputOpt, Reading
from .common import PromptFileOpt, read_image, resolve_prompt
from .options import READING, ModelChoice, model_options

PLACEHOLDER = "{text}"


@model_options(*READING)
def locate(
    choice: ModelChoice,
    images: ImagesArg = None,
    text: Annotated[str, typer.Argument(help="The text to find (the last argument).", show_default=False)] = ...,
    annotate: Annotated[Optional[Path], typer.Option(
        "--annotate", help="Draw the boxes on the image, to out.png (several images: out_IMAGE.png).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="JSON: what locate always writes (taken, like every command's --json).")] = True,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    prompt_file: PromptFileOpt = None,
) -> None:
    """Find TEXT in each image (prompt: locate, {text} replaced): JSON boxes on the model's 0-999 grid and in
    pixels. Malformed boxes are left out and out-of-range ones clamped, both noted; no box fails (exit 1)."""
    template = resolve_prompt(None, prompt_file, prompts.LOCATE)
    if PLACEHOLDER not in template:
        raise DsocrError(f"the locate prompt must contain {PLACEHOLDER} where the text goes")
    if not images and from_raw is None:
        raise DsocrError("give the images, then the text to find: dsocr locate IMAGE... TEXT")
    batch = Batch(images, from_raw, output, ".json")
    if annotate is not None and any(r.image is None for r in batch.readings):
        raise DsocrError("--annotate draws on the image: give the image with --from-raw")
    drawings = batch.paths_beside(annotate)
    batch.read(template.replace(PLACEHOLDER, text), choice)
    batch.emit(lambda reading: boxes_answer(reading, text, drawings.get(reading.name)), as_json=True)


def boxes_answer(reading: Reading, text: str, drawing: Path | None) -> Answer:
    blocks = [block for block in parse_blocks(reading.raw) if block.boxes or block.problems]
    problems = [problem for block in blocks for problem in block.problems]
    boxes = [{"label": block.label, "box": list(box),
              "box_px": list(to_pixels(box, *reading.size)) if reading.size else None}
             for block in blocks for box in block.boxes]
    record = {"text": text, "size": list(reading.size) if reading.size else None, "boxes": boxes,
              "problems": problems, "raw": reading.raw}
    if not boxes:
        return Answer(error=f"no box for {text!r} in the model output", record=record, notes=problems)
    if drawing is not None:
        save_image(drawing, annotate_page(read_image(reading.image), blocks))
    return Answer(record=record, notes=problems)
