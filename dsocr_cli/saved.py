"""Saved model output read back (--from-raw), for every command that takes it.

`convert` reads a layout JSON, a folder of per-page text files (as --keep-raw writes them) or one
text file; the per-image commands read IMAGE-NAME.txt per image; `eval` reads NAME.txt per image,
below MODE/ when it compared several modes. What is read becomes the same parsed pages a model
run gives, so everything downstream is the same.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePath

from .documents import Document, Source, parse_pages
from .errors import DsocrError
from .jobs import Job
from .layout import raw_pages_from_layout
from .pages import UNFINISHED, ParsedPage
from .writers import Target

_PAGE_NUMBER = re.compile(r"([0-9]+)(?![\s\S]*[0-9])")
MAX_SAVED_PAGE = 1_000_000


def read_saved(path: Path) -> tuple[str | None, dict[int, ParsedPage]]:
    """Saved raw output: a layout JSON, a folder of per-page text files, or one text file (page 1).

    In a folder, the page number is the last number in a file's name; page-0003.length.txt (as
    --keep-raw names it) marks a page the model did not finish.

    Returns the source name the layout JSON records (None for text) and the pages by number.
    """
    if path.is_dir():
        files = [f for f in path.iterdir() if f.suffix.lower() in (".txt", ".md", ".mmd") and not f.name.startswith(".")]
        numbered = {}
        for file in files:
            stem, _, reason = file.stem.partition(".")
            match = _PAGE_NUMBER.search(stem)
            if match is None:
                raise DsocrError(f"--from-raw {path}: {file.name} has no page number in its name (e.g. page-0003.txt)")
            number = int(match.group(1))
            if not 1 <= number <= MAX_SAVED_PAGE:
                raise DsocrError(f"--from-raw {path}: {file.name} names page {number}, not one of 1..{MAX_SAVED_PAGE:,}")
            if number in numbered:
                raise DsocrError(f"--from-raw {path}: two files for page {number}")
            numbered[number] = ParsedPage(number, _read_text(file), reason if reason in UNFINISHED else "eos")
        if not numbered:
            raise DsocrError(f"--from-raw {path}: no .txt/.md page files in this folder")
        return None, numbered
    text = _read_text(path)
    if path.suffix.lower() != ".json":
        return None, {1: ParsedPage(1, text, "eos")}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DsocrError(f"--from-raw {path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DsocrError(f"--from-raw {path}: JSON nested too deeply to be a layout file") from None
    pages = {}
    for number, raw, reason, size, error in raw_pages_from_layout(doc):
        pages[number] = ParsedPage(number, raw, reason, size, error)
    return str(doc.get("source") or path.stem), pages


def saved_job(saved: dict[int, ParsedPage], source: Source, target: Target, document: Document | None,
              pages: str | None) -> Job:
    """A job rendering saved outputs; with the input document, its pages give sizes and figures."""
    numbers = sorted(saved)
    if not numbers:
        raise DsocrError("the saved output has no pages")
    if pages:
        wanted = set(parse_pages(pages, max(numbers)))
        numbers = [n for n in numbers if n in wanted]
    if not numbers:
        raise DsocrError(f"--pages {pages} selects none of the saved pages")
    if document is not None and numbers[-1] > document.page_count:
        raise DsocrError(f"the saved output has page {numbers[-1]}, but {source.path} has "
                         f"{document.page_count} pages")
    return Job(source, target, numbers, document, {n: saved[n] for n in numbers})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DsocrError(f"--from-raw {path}: no such file or folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DsocrError(f"--from-raw {path}: cannot read it: {exc}") from None


def source_for(name: str) -> Source:
    """A stand-in input for saved outputs read without their document (names the outputs); a
    recorded name is data: only its last part names them ("/", ".." and "" give "document")."""
    base = PurePath(name).name
    base = base if base not in ("", ".", "..") else "document"
    return Source(Path(base), PurePath(base))


def image_outputs(folder: Path) -> list[Path]:
    """Every saved output below a folder (the per-image commands without images): its .txt files."""
    files = sorted(p for p in folder.rglob("*.txt") if not any(part.startswith(".") for part in p.parts))
    if not files:
        raise DsocrError(f"--from-raw {folder}: no .txt files in this folder")
    return files


def image_output(from_raw: Path, relative: PurePath) -> Path:
    """Where an image's saved output is: the file itself, or IMAGE-NAME.txt in the folder."""
    return from_raw if from_raw.is_file() else from_raw / relative.with_suffix(".txt")


def eval_output(folder: Path, mode: str, image: Path, several_modes: bool) -> Path:
    """`eval --from-raw`: NAME.txt for an image, below MODE/ when that folder is there."""
    per_mode = folder / mode
    if per_mode.is_dir():
        return per_mode / f"{image.stem}.txt"
    if several_modes:
        raise DsocrError(f"--from-raw with several modes reads {folder}/MODE/NAME.txt, and {per_mode} is missing")
    return folder / f"{image.stem}.txt"
