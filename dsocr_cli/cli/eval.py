"""`dsocr eval PAIRS`: read images with known text in one or more modes and score each mode's
read-back (OmniDocBench edit distance, Fox precision) against the vision tokens it spent."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import saved
from ..errors import DsocrError
from ..plot import precision_figure, require_matplotlib
from ..preprocess import MODES, resolve_mode, vision_token_count
from ..requests import OcrRequest
from .common import model_kind_of, print_json, read_image, warn
from .options import GENERATION, LOADING, ModelChoice, model_options
from .readback import (counting_tokenizer, fmt_distance, fmt_percent, fmt_ratio, free_ocr_prompt, page_numbers,
                       page_scores, read_back, read_text, totals)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")
TRUTH_SUFFIXES = (".md", ".txt")


@dataclass(frozen=True)
class Pair:
    image: Path
    truth: str   # the ground-truth text, surrounding whitespace removed


@model_options(*LOADING, *GENERATION)  # its modes are its own option
def eval_(
    choice: ModelChoice,
    pairs_path: Annotated[Path, typer.Argument(
        metavar="PAIRS", help="Folder of images with NAME.md or NAME.txt ground truth beside each, or a JSONL "
                              'manifest of {"image": PATH, "text": TRUTH} or {"image": PATH, "truth": PATH}.')],
    modes: Annotated[str, typer.Option("--modes", help="Comma-separated modes to compare.")] = "tiny,small,base",
    from_raw: Annotated[Optional[Path], typer.Option(
        "--from-raw", help="Score saved raw outputs instead of running the model: DIR/NAME.txt per image, or "
                           "DIR/MODE/NAME.txt with several modes (what --save-raw writes).")] = None,
    save_raw: Annotated[Optional[Path], typer.Option(
        "--save-raw", help="Keep the model's raw outputs as DIR/MODE/NAME.txt for a later --from-raw.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Draw precision against compression ratio, one line per mode, to this PNG "
                       "(needs matplotlib: pip install 'dsocr[plot]').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every page's scores.")] = False,
) -> None:
    """Score the model's free OCR of known pages, per mode: edit distance, precision, tokens, compression."""
    names = parse_modes(modes)
    chosen = {m: resolve_mode(m, model_kind_of(choice.model)) for m in names}  # DeepSeek-OCR-2: gundam only
    if plot is not None:
        require_matplotlib()
    if from_raw is not None and save_raw is not None:
        raise DsocrError("--save-raw keeps the model's outputs; with --from-raw there are none")
    pairs = load_pairs(pairs_path)
    if from_raw is not None or save_raw is not None:
        check_unique_stems(pairs)
    sizes = [read_image(pair.image).size for pair in pairs]   # every image readable before a long run

    finish: dict[tuple[str, int], str] = {}
    if from_raw is not None:
        raws = {(m, i): read_text(saved.eval_output(from_raw, m, pair.image, len(names) > 1))
                for m in names for i, pair in enumerate(pairs)}
        tokenizer = counting_tokenizer(choice.model)
    else:
        from ..runner import load_runner

        runner = load_runner(choice.model, choice.device, choice.dtype, **choice.settings)
        prompt = free_ocr_prompt()
        requests = (OcrRequest(read_image(pair.image), prompt, chosen[m], key=(m, i))
                    for m in names for i, pair in enumerate(pairs))
        results = read_back(runner, requests, len(names) * len(pairs))
        raws = {key: result.text for key, result in results.items()}
        finish = {key: result.finish_reason for key, result in results.items()}
        tokenizer = runner.tokenizer
        if save_raw is not None:
            write_raw(save_raw, raws, pairs)

    report = []
    for m in names:
        items = []
        for i, pair in enumerate(pairs):
            item = {"image": str(pair.image),
                    **page_numbers(tokenizer, pair.truth, vision_token_count(chosen[m], *sizes[i])),
                    **page_scores(raws[m, i], pair.truth)}
            if (m, i) in finish:
                item["finish_reason"] = finish[m, i]
            items.append(item)
        report.append({"mode": m, "pages": len(items), **totals(items), "items": items})

    if plot is not None:
        save_plot(report, plot)
    if as_json:
        print_json({"modes": report})
    else:
        show_report(report)


def parse_modes(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        raise DsocrError(f"unknown mode {', '.join(unknown) or repr(text)} (use {', '.join(MODES)})")
    return names


def load_pairs(path: Path) -> list[Pair]:
    if path.is_dir():
        pairs = folder_pairs(path)
    elif path.is_file():
        pairs = manifest_pairs(path)
    else:
        raise DsocrError(f"no such folder or manifest: {path}")
    if not pairs:
        raise DsocrError(f"{path} has no image with ground truth")
    return pairs


def folder_pairs(folder: Path) -> list[Pair]:
    """Every image with NAME.md (else NAME.txt) beside it; images without one are skipped, aloud."""
    pairs = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        truth = next((image.with_suffix(s) for s in TRUTH_SUFFIXES if image.with_suffix(s).is_file()), None)
        if truth is None:
            warn(f"skipping {image}: no {image.stem}.md or {image.stem}.txt beside it")
            continue
        pairs.append(Pair(image, read_text(truth).strip()))
    return pairs


def manifest_pairs(manifest: Path) -> list[Pair]:
    """JSONL, one pair a line; relative paths are taken from the manifest's folder."""
    pairs = []
    for number, line in enumerate(read_text(manifest).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DsocrError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or \
                not (isinstance(item.get("text"), str) ^ isinstance(item.get("truth"), str)):
            raise DsocrError(f'{where}: expected {{"image": PATH, "text": TRUTH}} or {{"image": PATH, "truth": PATH}}')
        truth = item["text"] if isinstance(item.get("text"), str) else read_text(manifest.parent / item["truth"])
        pairs.append(Pair(manifest.parent / item["image"], truth.strip()))
    return pairs


def check_unique_stems(pairs: list[Pair]) -> None:
    stems = [p.image.stem for p in pairs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DsocrError(f"raw outputs are named after the images, and {twice[0]} names more than one image")


def write_raw(folder: Path, raws: dict[tuple[str, int], str], pairs: list[Pair]) -> None:
    try:
        for (mode, i), text in raws.items():
            (folder / mode).mkdir(parents=True, exist_ok=True)
            (folder / mode / f"{pairs[i].image.stem}.txt").write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DsocrError(f"cannot write raw outputs to {folder}: {exc.strerror}") from None


def save_plot(report: list[dict], path: Path) -> None:
    series = {r["mode"]: [(i["ratio"], i["precision"]) for i in r["items"] if i["precision"] is not None]
              for r in report}
    try:
        precision_figure(series).savefig(path)
    except OSError as exc:
        raise DsocrError(f"cannot write {path}: {exc.strerror}") from None
    warn(f"plot written to {path}")


def show_report(report: list[dict]) -> None:
    table = Table(title=f"OCR read-back of {report[0]['pages']} pages")
    columns = ("mode", "text tokens", "vision tokens", "ratio", "edit distance", "precision")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in report:
        table.add_row(r["mode"], str(r["text_tokens"]), str(r["vision_tokens"]), fmt_ratio(r["ratio"]),
                      fmt_distance(r["edit_distance"]), fmt_percent(r["precision"]))
    table.caption = "edit distance as OmniDocBench (0 is perfect), precision as Fox (truth words read back)"
    Console().print(table)
