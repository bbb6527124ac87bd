"""The per-image pipeline (ocr, parse-chart, parse-chem, describe, locate): images in, one
reading per image out, every image in one run of the model so they are batched, or saved raw
output read back instead (--from-raw). A command turns each Reading into an Answer; one image
failing never stops the others. No terminal here: cli/batch.py shows progress and writes answers.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Callable

from . import saved
from .documents import PageRef, Source, expand_inputs, open_document
from .errors import DsocrError
from .preprocess import Mode
from .requests import OcrRequest, OcrResult, Runner, TextStream
from .writers import folder_for_several, is_folder


@dataclass
class Reading:
    """One input and what the model said about it, or why there is nothing to say."""
    name: str                        # the image path as given; the raw file's when read without an image
    image: Path | None
    relative: PurePath               # names the image's file below -o DIR/ and in --from-raw DIR
    raw: str = ""
    size: tuple[int, int] | None = None   # the image's pixels, when it was read
    error: str | None = None
    result: OcrResult | None = None  # the engine's result, when the model ran


@dataclass
class Answer:
    """What a command makes of one reading."""
    text: str | None = None          # the data in the chosen text format
    record: dict = field(default_factory=dict)  # the JSON record ("image" is added)
    error: str | None = None         # one line; the image counts as failed
    notes: list[str] = field(default_factory=list)  # worth a line on stderr, not failures


class ImageBatch:
    """The readings of one command run, in input order, and where their outputs go."""

    def __init__(self, images: list[str] | None, from_raw: Path | None, output: str | None, suffix: str):
        if from_raw is not None and not from_raw.exists():
            raise DsocrError(f"--from-raw {from_raw}: no such file or folder")
        self.from_raw = from_raw
        self.readings = _image_readings(images) if images else _saved_readings(from_raw)
        if from_raw is not None and from_raw.is_file() and len(self.readings) > 1:
            raise DsocrError(f"--from-raw {from_raw}: a file holds one image's output; give a folder for several")
        self.files = _output_files(self.readings, output, suffix)

    def paths_beside(self, path: Path | None) -> dict[str, Path]:
        """Per-image files for an option such as --draw mol.svg, by reading name: that name for one
        image, mol_IMAGE.svg for several; none without the option."""
        if path is None:
            return {}
        if len(self.readings) == 1:
            return {self.readings[0].name: path}
        paths = [path.with_name(f"{path.stem}_{_flat(r.relative)}{path.suffix}") for r in self.readings]
        _check_unique(paths, f"{path}")
        return {r.name: p for r, p in zip(self.readings, paths)}

    def read(self, prompt: str, mode: Mode, open_runner: Callable[[int], Runner],
             on_text: Callable[[str], None] | None = None, on_result: Callable[[], None] = lambda: None) -> None:
        """Fill every reading's raw output: from the saved files, or from one run of the runner that
        `open_runner(number of images)` gives (`on_text` hears the generated text as it comes: for
        one image only; `on_result` hears of each image done)."""
        pending = [r for r in self.readings if r.error is None]
        if self.from_raw is not None:
            for reading in pending:
                _read_saved(reading, self.from_raw)
            return
        requests = []
        for index, reading in enumerate(pending):
            try:
                requests.append(OcrRequest(_page(reading), prompt, mode, key=index))
            except DsocrError as exc:
                reading.error = str(exc)
        if requests:
            _run(requests, pending, open_runner(len(requests)), on_text, on_result)


def _image_readings(images: list[str]) -> list[Reading]:
    """Readings for the inputs; PDFs found in folders are left out, PDFs named fail (convert reads them)."""
    readings = []
    for source in expand_inputs(images, sys.stdin if "-" in images else None):
        error = source.error
        if error is None and source.path.suffix.lower() == ".pdf":
            if source.root is not None:
                continue
            error = "a PDF: this command reads images (dsocr convert reads documents)"
        readings.append(Reading(str(source.path), source.path, source.relative, error=error))
    if not readings:
        raise DsocrError(f"no images in {', '.join(images)}")
    return readings


def _saved_readings(from_raw: Path | None) -> list[Reading]:
    """Without images: the saved output file, or every .txt in the folder, each as one reading."""
    if from_raw is None:
        raise DsocrError("no images: give image files, folders, or - to read paths from stdin")
    if from_raw.is_file():
        return [Reading(str(from_raw), None, PurePath(from_raw.name))]
    return [Reading(str(p), None, PurePath(p.relative_to(from_raw))) for p in saved.image_outputs(from_raw)]


def _output_files(readings: list[Reading], output: str | None, suffix: str) -> list[Path | None]:
    if output is None or output == "-":
        return [None] * len(readings)
    output = folder_for_several(output, len(readings) > 1)
    if is_folder(output):
        files = [Path(output) / r.relative.with_suffix(suffix) for r in readings]
        _check_unique(files, f"-o {output}")
        return files
    if len(readings) > 1:
        raise DsocrError(f"-o {output}: {len(readings)} images need an output folder: write it as -o DIR/")
    return [Path(output)]


def _check_unique(paths: list[Path], what: str) -> None:
    seen = set()
    for path in paths:
        key = os.path.normcase(os.path.abspath(path)).casefold()
        if key in seen:
            raise DsocrError(f"{what}: two images would write {path}; give them separately")
        seen.add(key)


def _flat(relative: PurePath) -> str:
    return "_".join(relative.with_suffix("").parts)


def _page(reading: Reading) -> PageRef:
    """The image, checked and ready to load where it is needed (an engine worker)."""
    return open_document(Source(reading.image, reading.relative)).page_ref(1)


def _read_saved(reading: Reading, from_raw: Path) -> None:
    """The saved output for a reading, and its image's size when there is an image."""
    path = saved.image_output(from_raw, reading.relative)
    try:
        reading.raw = path.read_text(encoding="utf-8")
        if reading.image is not None:
            reading.size = _page(reading)().size
    except FileNotFoundError:
        reading.error = f"no saved output {path}"
    except (OSError, UnicodeDecodeError) as exc:
        reading.error = f"cannot read {path}: {exc}"
    except DsocrError as exc:
        reading.error = str(exc)


def _run(requests: list[OcrRequest], readings: list[Reading], runner: Runner, on_text, on_result) -> None:
    """One run over every request (keys index `readings`)."""
    on_token = None
    if on_text is not None:
        stream = TextStream(runner.tokenizer, on_text)
        on_token = lambda key, token: stream(token)  # noqa: E731
    try:
        for result in runner.run(requests, on_token=on_token):
            reading = readings[result.key]
            reading.result, reading.size, reading.error = result, result.page_size, result.error
            reading.raw = result.text
            on_result()
    finally:
        runner.close()


def answer_to(reading: Reading, answer_of: Callable[[Reading], Answer]) -> Answer:
    if reading.error is not None:
        return Answer(error=reading.error, record={"error": reading.error})
    try:
        answer = answer_of(reading)
    except DsocrError as exc:
        return Answer(error=str(exc), record={"error": str(exc), "raw": reading.raw})
    if reading.result is not None and reading.result.finish_reason != "eos":
        answer = replace(answer, notes=answer.notes + [f"the model stopped early ({reading.result.finish_reason})"])
    return answer


def json_line(reading: Reading, answer: Answer) -> str:
    record = {"image": reading.name, **answer.record}
    if reading.result is not None and reading.error is None:
        record.setdefault("finish_reason", reading.result.finish_reason)
    return json.dumps(record, ensure_ascii=False) + "\n"
