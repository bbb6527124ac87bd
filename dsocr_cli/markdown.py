"""One page of model output -> Markdown and the figures it links to. Pure: no files, no terminal.

With the grounding prompt the model writes labelled blocks (grounding.parse_blocks); each becomes
Markdown blocks separated by one blank line: `title`/`sub_title` headings, `image` figures cropped
from the page and linked, tables as pipe tables or HTML, math in `$` delimiters or kept as LaTeX,
page furniture dropped unless asked for, any other label as text. Free-OCR output (no tags) is one
text block. Nothing is dropped silently: malformed markup lands in `problems`, and a page the model
did not finish ends with an HTML comment that says so.

Only prose is rewritten: fenced code and code spans stay verbatim, and HTML tables are rebuilt
from their cells (tables.to_html_table) so they stay balanced; math inside HTML tables is kept as
the model wrote it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from PIL import Image

from .errors import DsocrError
from .grounding import Box, to_pixels
from .pages import ParsedPage, crop_figures, plain_text
from .safe_links import defuse_links
from .tables import Table, find_html_tables, parse_html_table, to_html_table, to_pipe_table

# Page furniture. Published DeepSeek-OCR outputs use the labels text, title, sub_title, image,
# image_caption, table, table_caption, table_footnote, equation, header and footer; the page_*
# spellings are other layout models' names for the same things, accepted in case they turn up.
FURNITURE = frozenset({"header", "footer", "page_header", "page_footer", "page_number"})
TABLE_MODES = ("auto", "html", "markdown")
MATH_MODES = ("dollars", "latex")

_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})")
# A `<` that Markdown would read as HTML is escaped unless it opens one of the inline tags the model
# uses for formatting or an autolink: OCR'd text such as `<username>` must stay visible, and
# <script>, <pre> or <!-- would swallow the Markdown that follows.
# Only bare tags pass (an attribute could carry a script) and only http(s)/mailto autolinks.
_STRAY_HTML = re.compile(r"<(?=[A-Za-z/!?])(?!/?(?:sup|sub|br|b|i|u|s|em|strong|small|mark|del|ins|code|kbd|span)\s*/?>"
                         r"|(?:https?|mailto):[^\s<>]*>|[^\s<>@/:]+@[^\s<>]+>)", re.I)
_CENTER = re.compile(r"</?center\s*>", re.I)
_WITHIN_PARAGRAPH = r"(?:(?!\n\s*\n).)"
# Math runs to its closer but never past the next opener of its kind (`\\[` is a LaTeX line break,
# not an opener): an unclosed `\(` then costs a scan to the next one, so 100 KB of them stay linear.
# A code span opens with a whole run of backticks (possessive), not with every tail of the run.
_INLINE_BODY = r"(?:(?!\n\s*\n|\\\().)"
_DISPLAY_BODY = r"(?:(?!\n\s*\n|(?<!\\)\\\[).)"
_SPANS = re.compile(rf"(?<!`)(?P<ticks>`++){_WITHIN_PARAGRAPH}+?(?<!`)(?P=ticks)(?!`)"
                    rf"|(?<!\\)\\\((?P<inline>{_INLINE_BODY}*?)\\\)|(?<!\\)\\\[(?P<display>{_DISPLAY_BODY}*?)\\\]", re.S)
_HEADING = re.compile(r"(#{1,6})(?:[ \t]+|$)")


@dataclass(frozen=True)
class RenderOptions:
    tables: str = "auto"         # auto: HTML when cells are merged, else pipes | html | markdown
    math: str = "dollars"        # dollars: $..$ and $$..$$ | latex: keep \(..\) and \[..\]
    keep_headers: bool = False   # keep page headers, footers and page numbers
    figure_dir: str = ""         # prefix of figure links, e.g. "report_images/"

    def __post_init__(self):
        if self.tables not in TABLE_MODES:
            raise DsocrError(f"unknown table style {self.tables!r} (use {', '.join(TABLE_MODES)})")
        if self.math not in MATH_MODES:
            raise DsocrError(f"unknown math style {self.math!r} (use {', '.join(MATH_MODES)})")


@dataclass
class Figure:
    name: str                    # p{page}_fig{k}.png, k from 1 in reading order
    box: Box                     # in page pixels
    image: Image.Image | None    # the crop; None when no page image was given
    caption: str                 # plain text of the image_caption that follows, or ""


@dataclass(frozen=True)
class FigureNote:
    """What a second look at a figure adds (convert --parse-figures): alt text, Markdown under it."""
    alt: str | None = None       # replaces the caption as alt text
    below: str = ""


@dataclass
class RenderedPage:
    markdown: str                # no trailing newline; "" for an empty page
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def render_page(raw: str, page_number: int, page_size: tuple[int, int], image: Image.Image | None = None,
                options: RenderOptions = RenderOptions(), finish_reason: str = "eos",
                figure_notes: dict[str, FigureNote] | None = None) -> RenderedPage:
    """Markdown for one page of raw output; `image` is the page at full resolution (figures are
    cropped from it); `figure_notes` by figure name."""
    page = ParsedPage(page_number, raw, finish_reason, page_size)
    return render_parsed(page, page_size, crop_figures(page, image) if image is not None else {}, options,
                         figure_notes)


def render_parsed(page: ParsedPage, page_size: tuple[int, int], crops: dict[str, Image.Image],
                  options: RenderOptions = RenderOptions(),
                  figure_notes: dict[str, FigureNote] | None = None) -> RenderedPage:
    """Markdown for a parsed page; `crops` are its figures cut from the page (crop_figures), by name."""
    parts: list[str] = []
    problems: list[str] = []
    figures = iter(page.figures)
    rendered = []
    for i, block in enumerate(page.blocks):
        where = f"page {page.number}, block {i + 1} ({block.label})"
        problems += [f"{where}: {p}" for p in block.problems]
        if block.label in FURNITURE and not options.keep_headers:
            continue
        if block.label == "image":
            for figure in (next(figures) for _ in block.boxes):
                rendered.append(Figure(figure.name, to_pixels(figure.box, *page_size), crops.get(figure.name),
                                       figure.caption))
                note = (figure_notes or {}).get(figure.name, FigureNote())
                parts += [_figure_link(rendered[-1], options.figure_dir, note.alt), note.below]
            parts += _text_pieces(block.text, options, problems, where)
        elif block.label in ("title", "sub_title"):
            parts.append(_heading(block.text, 1 if block.label == "title" else 2, options))
        elif block.label == "equation":
            parts += _text_pieces(_as_display_math(block.text), options, problems, where)
        else:
            parts += _text_pieces(block.text, options, problems, where)
    if page.finish_reason != "eos":
        parts.append(_incomplete_note(page.number, page.finish_reason))
    return RenderedPage("\n\n".join(p for p in parts if p), rendered, problems)


def join_pages(pages: list[str], separator: str | None = None, numbers: list[int] | None = None) -> str:
    """The document: pages in order, optionally split by `separator` ({page}: the number of the page
    that follows, from `numbers`, which default to 1, 2, ...)."""
    numbers = numbers or list(range(1, len(pages) + 1))
    parts = []
    for n, page in enumerate(pages):
        if separator is not None and n > 0:
            parts.append(separator.strip("\n").replace("{page}", str(numbers[n])))
        parts.append(page.strip())
    body = "\n\n".join(p for p in parts if p)
    return body + "\n" if body else ""


def _figure_link(figure: Figure, figure_dir: str, alt: str | None = None) -> str:
    alt = (alt or figure.caption).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    target = figure_dir + figure.name
    if re.search(r"[\s()<>]", target):
        target = "<" + target.replace("<", "%3C").replace(">", "%3E") + ">"
    return f"![{alt}]({target})"


def _heading(text: str, level: int, options: RenderOptions) -> str:
    """`#` heading; a level the model wrote itself (`## 2. SQL`) wins over the label's."""
    line = " ".join(_CENTER.sub("", text).split())
    own = _HEADING.match(line)
    if own:
        level, line = len(own.group(1)), line[own.end():]
    return "#" * level + " " + _convert(line, options, inline=True)[0] if line else ""


def _as_display_math(text: str) -> str:
    """An equation block without delimiters is display math all the same."""
    if not text.strip() or re.search(r"\\[(\[]|\$", text):
        return text
    return f"\\[{text}\\]"


def _incomplete_note(page_number: int, finish_reason: str) -> str:
    reason = re.sub(r"[^A-Za-z0-9_]+", "_", finish_reason) or "unknown"
    why = {"length": "the model reached its token limit",
           "repetition": "the model started repeating itself and was stopped"}.get(reason, "the model stopped early")
    return f"<!-- dsocr: page {page_number} incomplete ({reason}): {why}; the rest of the page is missing -->"


def _text_pieces(text: str, options: RenderOptions, problems: list[str], where: str) -> list[str]:
    """A block's text as Markdown blocks: code fences verbatim, tables rebuilt, prose converted."""
    pieces: list[str] = []
    for is_code, chunk in _split_fences(text, problems, where):
        if is_code:
            pieces.append(chunk)
            continue
        chunk = _CENTER.sub("", chunk)
        pos = 0
        for table in find_html_tables(chunk):
            pieces += _prose_pieces(chunk[pos:table.start()], options)
            pieces += _table_pieces(table.group(0), options, problems, where)
            pos = table.end()
        pieces += _prose_pieces(chunk[pos:], options)
    return [p for p in pieces if p]


def _split_fences(text: str, problems: list[str], where: str) -> list[tuple[bool, str]]:
    """(is_code, chunk) runs; a fence the output left open is closed (and reported)."""
    runs: list[tuple[bool, str]] = []
    lines: list[str] = []
    fence = None
    for line in text.split("\n"):
        opening = _FENCE_OPEN.match(line) if fence is None else None
        if opening and not (opening.group(1)[0] == "`" and "`" in line[opening.end():]):
            runs.append((False, "\n".join(lines)))
            lines, fence = [], opening.group(1)
        lines.append(line)
        if fence and len(lines) > 1 and re.fullmatch(r" {0,3}%s{%d,}\s*" % (re.escape(fence[0]), len(fence)), line):
            runs.append((True, "\n".join(lines)))
            lines, fence = [], None
    if fence:
        problems.append(f"{where}: code fence not closed (output cut off?), closed at the end of the block")
        runs.append((True, "\n".join(lines + [fence])))
    else:
        runs.append((False, "\n".join(lines)))
    return runs


def _table_pieces(markup: str, options: RenderOptions, problems: list[str], where: str) -> list[str]:
    table = parse_html_table(markup)
    if not re.search(r"</table\s*>\s*$", markup, re.I):
        problems.append(f"{where}: table not closed (output cut off?), closed after its last cell")
    if not table.rows:
        text = plain_text(markup)
        if text:
            problems.append(f"{where}: table without cells, kept as text")
        return _prose_pieces(text, options)
    if options.tables == "html" or (options.tables == "auto" and table.has_spans):
        return [to_html_table(table)]
    cells = [[replace(c, text=_convert(c.text, options, inline=True)[0]) for c in row] for row in table.rows]
    return [to_pipe_table(Table(cells))]


def _prose_pieces(text: str, options: RenderOptions) -> list[str]:
    return [p for p in map(_tidy, _convert(text, options)) if p]


def _convert(text: str, options: RenderOptions, inline: bool = False) -> list[str]:
    """Prose with math rewritten per options and literal `$` escaped where `$` means math.

    Returns the text split where display math has to stand as a block of its own; with `inline`
    (headings, table cells) display math becomes inline math and the result is one piece.
    """
    dollars = options.math == "dollars"
    pieces, current, pos = [], "", 0
    for span in _SPANS.finditer(text):
        current += _prose(text[pos:span.start()], dollars)
        pos = span.end()
        if span.group("ticks"):
            current += span.group(0)                               # code span: verbatim
        elif not dollars:
            current += _colons(span.group(0))                      # LaTeX delimiters kept
        elif span.group("display") is None or inline:
            body = " ".join(_colons(span.group("inline") or span.group("display") or "").split())
            current += f"${body}$" if body else ""
        else:
            pieces += [current, _display_math(span.group("display"))]
            current = ""
    return pieces + [current + _prose(text[pos:], dollars)]


def _display_math(body: str) -> str:
    lines = [line.rstrip() for line in _colons(body).strip().split("\n") if line.strip()]
    return "$$\n" + "\n".join(lines) + "\n$$" if lines else ""


def _prose(text: str, dollars: bool) -> str:
    text = defuse_links(_STRAY_HTML.sub(r"\\<", _colons(text)))
    return re.sub(r"(?<!\\)\$", r"\\$", text) if dollars else text


def _colons(text: str) -> str:
    """The official renderer's two macro substitutions (not every Markdown math engine knows them)."""
    return text.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")


def _tidy(text: str) -> str:
    """Trailing spaces off, except a "  " line break the model put inside a block; no 3+ newlines."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        kept = line.rstrip()
        wanted_break = line.endswith("  ") and kept and i + 1 < len(lines) and lines[i + 1].strip()
        out.append(kept + "  " if wanted_break else kept)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
