"""Text (plain or Markdown) -> page images laid out like the paper's Fox pages, and the text on each.

Pages are A4 at 144 dpi (the resolution dsocr renders PDFs at) with a typeset body: margins,
greedy word wrapping (CJK breaks between characters, over-long words between letters), headings
larger and bold, code in a monospace face, and as many pages as the text needs. Plain text is
reflowed like prose, but keeps a line break before an indented line or a list item; Markdown is
reflowed and drawn without its markup. Each page also carries the
text drawn on it (wrapped lines re-joined as in the source), which is the ground truth an OCR
read-back is scored against and whose tokens are counted. Same text, typeface and size give the
same pixels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from PIL import Image, ImageDraw, ImageFont

from .fonts import Typeface

CJK_CHARS = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_PIECES = re.compile(rf"\n|[^\S\n]+|[{CJK_CHARS}]|[^\s{CJK_CHARS}]+")
_SOFT_BREAK = re.compile(r"[^\S\n]*\n(?![^\S\n]|[-*+\u2022][^\S\n]|\d+[.)][^\S\n])")
HEADING_SCALE = {"h1": 1.6, "h2": 1.35, "h3": 1.15, "h4": 1.0, "h5": 1.0, "h6": 1.0}


@dataclass(frozen=True)
class PageStyle:
    width: int = 1190          # A4 at 144 dpi
    height: int = 1684
    margin: int = 110
    font_size: int = 18        # px, 9 pt at 144 dpi: about 1,000 tokens of English prose a page
    line_spacing: float = 1.3  # line height / font size
    indent: int = 36           # px per list or quote level


@dataclass(frozen=True)
class TextBlock:
    """One paragraph, heading or code block, as drawn (no markup)."""
    text: str
    kind: str = "body"   # body, h1..h6, code
    level: int = 0       # list / quote nesting: indentation steps


@dataclass
class Page:
    image: Image.Image   # RGB
    text: str            # the text drawn on this page; blocks separated by a blank line


def has_cjk(text: str) -> bool:
    return re.search(f"[{CJK_CHARS}]", text) is not None


def plain_blocks(text: str) -> list[TextBlock]:
    """Paragraphs between blank lines, their hard-wrapped lines joined; a line that starts indented
    or with a list marker (-, *, +, \u2022, 1., 1)) stays on a line of its own."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    return [TextBlock(_SOFT_BREAK.sub(" ", p.strip("\n"))) for p in re.split(r"\n[^\S\n]*\n", text) if p.strip()]


def markdown_blocks(text: str) -> list[TextBlock]:
    """CommonMark (+ tables) -> blocks: paragraphs reflowed, markup dropped, list markers and
    nesting kept, code verbatim, table rows as `a | b` lines."""
    blocks: list[TextBlock] = []
    level, marker = 0, ""
    row: list[str] | None = None           # the cells of the table row being read
    for token in MarkdownIt("commonmark").enable("table").parse(text.expandtabs(4)):
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open", "blockquote_open"):
            level += 1
        elif kind in ("bullet_list_close", "ordered_list_close", "blockquote_close"):
            level -= 1
        elif kind == "list_item_open":
            marker = f"{token.info}{token.markup} " if token.info else "\u2022 "
        elif kind == "heading_open":
            marker = token.tag
        elif kind == "inline" and row is not None:
            row.append(_inline_text(token))
        elif kind == "inline" and marker in HEADING_SCALE:
            blocks.append(TextBlock(_inline_text(token), marker, level))
            marker = ""
        elif kind == "inline":  # an item's first paragraph carries its marker, one step left of the rest
            blocks.append(TextBlock(marker + _inline_text(token), "body", level - 1 if marker else level))
            marker = ""
        elif kind in ("fence", "code_block", "html_block"):
            blocks.append(TextBlock(token.content.rstrip("\n"), "code" if kind != "html_block" else "body", level))
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close":
            blocks.append(TextBlock(" | ".join(row), "body", level))
            row = None
    return [b for b in blocks if b.text.strip()]


def _inline_text(token) -> str:
    """The visible text of an inline token: markup dropped, soft breaks as spaces."""
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(_inline_text(child))
    return "".join(parts).strip()


def wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Greedy line breaking into source slices: "".join(result) == text. Each slice keeps the
    whitespace or newline that ended it; only its rstrip() is drawn."""
    lines, line = [], ""
    for piece in _PIECES.findall(text):
        if piece == "\n":
            lines.append(line + piece)
            line = ""
        elif piece.isspace() or font.getlength(line + piece) <= width:
            line += piece
        else:
            if line.strip():
                lines.append(line)
                line = ""
            for char in piece:  # the piece alone may be wider than a line: break between characters
                if line.strip() and font.getlength(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
    if line:
        lines.append(line)
    return lines


def block_font(block: TextBlock, typeface: Typeface, style: PageStyle) -> ImageFont.FreeTypeFont:
    if block.kind in HEADING_SCALE:
        return typeface.font("bold", round(style.font_size * HEADING_SCALE[block.kind]))
    return typeface.font("mono" if block.kind == "code" else "regular", style.font_size)


def render_pages(blocks: list[TextBlock], typeface: Typeface, style: PageStyle = PageStyle()) -> list[Page]:
    """Lay the blocks out top to bottom, starting a page when the next line would cross the bottom
    margin. A blank half line separates blocks; an empty document gives no pages."""
    pages: list[Page] = []
    parts: list[list[str]] = []            # per page: per block on it, its source slices
    draw = None
    y = bottom = style.height - style.margin

    def new_page():
        nonlocal draw, y
        image = Image.new("RGB", (style.width, style.height), "white")
        draw = ImageDraw.Draw(image)
        pages.append(Page(image, ""))
        parts.append([])
        y = style.margin

    for block in blocks:
        font = block_font(block, typeface, style)
        step = round(font.size * style.line_spacing)
        left = style.margin + block.level * style.indent
        lines = wrap(block.text, font, style.width - style.margin - left)
        if y > style.margin:              # half a line before a block that does not open a page
            y += step // 2
        for i, line in enumerate(lines):
            if y + step > bottom:
                new_page()
            if i == 0 or not parts[-1]:
                parts[-1].append("")
            parts[-1][-1] += line
            draw.text((left, y), line.rstrip(), font=font, fill="black")
            y += step
    for page, pieces in zip(pages, parts):
        page.text = "\n\n".join(p.strip() for p in pieces)
    return pages


def text_to_pages(text: str, typeface: Typeface, style: PageStyle = PageStyle(),
                  markdown: bool = False) -> list[Page]:
    return render_pages(markdown_blocks(text) if markdown else plain_blocks(text), typeface, style)
