"""`dsocr compress`: text rendered to pages, and what the model pays to read them (vision tokens)
instead of the text (text tokens); `--decode` reads them back and scores the read-back;
`--history` plans a chat's optical memory."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import DsocrError
from ..fonts import CJK, Typeface, find_typeface
from ..memory import Tier, Turn, forgetting_steps, parse_history, transcript
from ..preprocess import MODES, vision_token_count
from ..requests import OcrRequest
from ..textpages import Page, PageStyle, has_cjk, text_to_pages
from ..tokenizer import Tokenizer
from .common import ModeName, print_json, warn
from .options import GENERATION, LOADING, ModelChoice, model_options
from .readback import (counting_tokenizer, fmt_distance, fmt_percent, fmt_ratio, free_ocr_prompt, page_numbers,
                       page_scores, read_back, read_text, totals)

STYLE = PageStyle()
MARKDOWN_SUFFIXES = (".md", ".markdown")


@model_options(*LOADING, *GENERATION)  # its modes are its own option
def compress(
    choice: ModelChoice,
    source: Annotated[Optional[Path], typer.Argument(
        help="Text or Markdown file to render ('-' reads stdin).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", help="Write the pages here: page-001.png with its text in page-001.txt "
                            "(a folder `dsocr eval` reads).")] = None,
    mode: Annotated[ModeName, typer.Option(
        "--mode", help="Mode the pages are read in: tiny 512 (73 vision tokens), small 640 (111), "
                       "base 1024 (273), large 1280 (421), gundam (tiles). --history uses small and tiny.")] = ModeName.small,
    font: Annotated[Optional[Path], typer.Option(
        "--font", help="Font file (.ttf/.otf/.ttc). Default: a serif or sans font installed on the system, "
                       "else Pillow's built-in one.")] = None,
    font_size: Annotated[int, typer.Option(
        "--font-size", min=6, max=200,
        help=f"Body text height in pixels on the {STYLE.width} x {STYLE.height} page (A4 at 144 dpi).")] = STYLE.font_size,
    markdown: Annotated[Optional[bool], typer.Option(
        "--markdown/--plain", help="Read the text as Markdown or as plain text. Default: Markdown for .md files.",
        show_default=False)] = None,
    history: Annotated[Optional[Path], typer.Option(
        "--history", help="Plan a chat history (JSONL of {role, content}) as optical memory instead.")] = None,
    keep_text: Annotated[int, typer.Option("--keep-text", min=0, help="--history: newest turns kept as text.")] = 4,
    keep_small: Annotated[int, typer.Option(
        "--keep-small", min=0, help="--history: turns before those read in small mode; older ones in tiny.")] = 8,
    decode: Annotated[bool, typer.Option(
        "--decode", help="OCR the pages back with the model and report precision and edit distance.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Render text to page images and count text tokens, vision tokens and the compression ratio."""
    style = replace(STYLE, font_size=font_size)
    if (source is None) == (history is None):
        raise DsocrError("give a text file to render, or --history CHAT.jsonl (not both)")
    if history is not None:
        if decode:
            raise DsocrError("--decode reads back a rendered text file; it does not apply to --history")
        turns = parse_history(read_text(history), str(history))
        if not turns:
            raise DsocrError(f"{history} has no turns")
        plan_memory(turns, keep_text, keep_small, font, style, counting_tokenizer(choice.model), out, as_json)
        return

    text = read_text(source)
    use_markdown = markdown if markdown is not None else source.suffix.lower() in MARKDOWN_SUFFIXES
    pages = text_to_pages(text, pick_typeface(font, text), style, markdown=use_markdown)
    if not pages:
        raise DsocrError(f"{source} has no text to render")
    names = write_pages(pages, out, "page")
    from ..runner import load_runner

    runner = load_runner(choice.model, choice.device, choice.dtype, **choice.settings) if decode else None
    tokenizer = runner.tokenizer if runner else counting_tokenizer(choice.model)
    chosen = MODES[mode.value]
    items = [{"image": name, **page_numbers(tokenizer, page.text, vision_token_count(chosen, *page.image.size))}
             for name, page in zip(names, pages)]
    if runner:
        prompt = free_ocr_prompt()
        results = read_back(runner, (OcrRequest(p.image, prompt, chosen, key=i) for i, p in enumerate(pages)),
                            len(pages))
        for i, page in enumerate(pages):
            items[i].update(page_scores(results[i].text, page.text), finish_reason=results[i].finish_reason)
    if as_json:
        print_json({"mode": mode.value, "pages": items, "total": totals(items)})
    else:
        show_pages(items, mode.value, decode)


def pick_typeface(font: Path | None, text: str) -> Typeface:
    cjk = has_cjk(text)
    typeface = find_typeface(font, cjk)
    if typeface.regular is None:
        warn("no TrueType font found: using Pillow's built-in one (Latin only); see --font")
    elif cjk and font is None and typeface.regular.name not in CJK:
        warn("no CJK font found: CJK characters will show as boxes; see --font")
    return typeface


def write_pages(pages: list[Page], out: Path | None, prefix: str) -> list[str | None]:
    """Each page as PREFIX-NNN.png with its text in PREFIX-NNN.txt; names of the images (None without -o)."""
    if out is None:
        return [None] * len(pages)
    try:
        out.mkdir(parents=True, exist_ok=True)
        names = []
        for number, page in enumerate(pages, start=1):
            image = out / f"{prefix}-{number:03d}.png"
            page.image.save(image)
            image.with_suffix(".txt").write_text(page.text + "\n", encoding="utf-8")
            names.append(str(image))
        return names
    except OSError as exc:
        raise DsocrError(f"cannot write pages to {out}: {exc.strerror}") from None


def show_pages(items: list[dict], mode: str, decoded: bool) -> None:
    table = Table(title=f"Optical compression, {mode} mode")
    columns = ["page", "text tokens", "vision tokens", "ratio"] + (["precision", "edit distance"] if decoded else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "page" else "right")
    rows = [(item.get("image") or str(n), item) for n, item in enumerate(items, start=1)]
    for n, (label, item) in enumerate(rows + [("total", totals(items))], start=1):
        cells = [label, str(item["text_tokens"]), str(item["vision_tokens"]), fmt_ratio(item["ratio"])]
        if decoded:
            cells += [fmt_percent(item["precision"]), fmt_distance(item["edit_distance"])]
        table.add_row(*cells, end_section=n == len(rows))
    Console().print(table)


def plan_memory(turns: list[Turn], keep_text: int, keep_small: int, font: Path | None, style: PageStyle,
                tokenizer: Tokenizer, out: Path | None, as_json: bool) -> None:
    """Cost every forgetting step: text tiers by their tokens, rendered tiers by their pages' vision tokens."""
    typeface = pick_typeface(font, transcript(turns))
    costs: dict[Tier, dict] = {}

    def cost(tier: Tier) -> dict:
        if tier not in costs:
            text = transcript(turns[tier.start:tier.stop])
            entry = {"form": tier.form, "turns": [tier.start + 1, tier.stop], "text_tokens": len(tokenizer.encode(text))}
            if tier.form == "text":
                entry.update(pages=0, tokens=entry["text_tokens"])
            else:
                pages = text_to_pages(text, typeface, style)
                names = write_pages(pages, out, f"{tier.form}-turns-{tier.start + 1:03d}-{tier.stop:03d}-page")
                vision = sum(vision_token_count(MODES[tier.form], *p.image.size) for p in pages)
                entry.update(pages=len(pages), tokens=vision, images=names)
            costs[tier] = entry
        return costs[tier]

    steps = []
    for number, tiers in enumerate(forgetting_steps(len(turns), keep_text, keep_small)):
        entries = [cost(tier) for tier in tiers]
        tokens = sum(e["tokens"] for e in entries)
        previous = steps[-1]["tokens"] if steps else tokens
        all_text = steps[0]["tokens"] if steps else tokens
        steps.append({"step": number, "tiers": entries, "tokens": tokens,
                      "saved": previous - tokens, "saved_total": all_text - tokens})
    if as_json:
        print_json({"turns": len(turns), "steps": steps})
        return
    table = Table(title=f"Optical memory: {len(turns)} turns, the newest {keep_text} kept as text")
    for column in ("step", "context", "tokens", "saved", "saved in all"):
        table.add_column(column, justify="left" if column == "context" else "right")
    for step in steps:
        context = ", ".join(_tier_label(e) for e in step["tiers"])
        table.add_row(str(step["step"]), context, str(step["tokens"]), str(step["saved"]), str(step["saved_total"]))
    Console().print(table)


def _tier_label(entry: dict) -> str:
    first, last = entry["turns"]
    span = f"turn {first}" if first == last else f"turns {first}-{last}"
    if entry["form"] == "text":
        return f"{span} as text"
    return f"{span} on {entry['pages']} page{'s' if entry['pages'] != 1 else ''} ({entry['form']})"
