"""Tables as the model writes them (HTML, sometimes Markdown pipes) -> cells, grids, pipe tables.

Parsing is tolerant: the model's HTML may be truncated or lack closing tags; nothing in it is
executed or fetched.
"""
from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_TABLE = re.compile(r"<table\b.*?(?:</table>|$)", re.S | re.I)
_PIPE_SEPARATOR = r"\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?"
# A `<` that no `>` closes before the next `<` is text: the standard parser rescans an unfinished
# tag to the end of the input for each one (quadratic on `<td <td <td ...`).
_OPEN_LT = re.compile(r"<(?![^<>]*>)")
MAX_GRID = 100_000      # positions spans may make a table's grid cover (beyond its own cells)
_PIPE_TABLE = re.compile(r"^[ \t]*\|.*\n[ \t]*" + _PIPE_SEPARATOR + r"[ \t]*$(?:\n[ \t]*\|.*)*", re.M)


@dataclass
class Cell:
    text: str
    rowspan: int = 1
    colspan: int = 1
    header: bool = False


@dataclass
class Table:
    rows: list[list[Cell]] = field(default_factory=list)

    @property
    def has_spans(self) -> bool:
        return any(c.rowspan > 1 or c.colspan > 1 for row in self.rows for c in row)

    def grid(self, repeat_spans: bool = True) -> list[list[str]]:
        """A rectangular grid; a merged cell fills every position it covers (or only its first).

        Spans are clamped in total, not per cell: a rowspan stops at the last row (as in HTML) and a
        colspan stops where the grid would pass MAX_GRID positions, so ten cells of rowspan=colspan
        =1000 cost what the cells themselves do."""
        placed: dict[tuple[int, int], str] = {}
        height = len(self.rows)
        columns = max(max(map(len, self.rows), default=0), MAX_GRID // max(height, 1))
        for r, row in enumerate(self.rows):
            c = 0
            for cell in row:
                while (r, c) in placed:
                    c += 1
                colspan = max(1, min(cell.colspan, columns - c))
                for dr in range(min(cell.rowspan, height - r)):
                    for dc in range(colspan):
                        first = dr == 0 and dc == 0
                        placed[(r + dr, c + dc)] = cell.text if (first or repeat_spans) else ""
                c += colspan
        if not placed:
            return []
        width = max(c for _, c in placed) + 1
        return [[placed.get((r, c), "") for c in range(width)] for r in range(height)]


class _TableParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.table = Table()
        self.cell: Cell | None = None
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._close_cell()
            self.table.rows.append([])
        elif tag in ("td", "th"):
            self._close_cell()
            if not self.table.rows:
                self.table.rows.append([])
            a = dict(attrs)
            self.cell = Cell("", _span(a.get("rowspan")), _span(a.get("colspan")), tag == "th")
        elif tag == "br" and self.cell is not None:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("td", "th", "tr", "table"):
            self._close_cell()

    def handle_data(self, data):
        if self.cell is not None:
            self.parts.append(data)

    def _close_cell(self):
        if self.cell is not None:
            self.cell.text = "\n".join(" ".join(line.split()) for line in "".join(self.parts).split("\n")).strip()
            self.table.rows[-1].append(self.cell)
            self.cell, self.parts = None, []

    def close(self):
        super().close()
        self._close_cell()


def _span(value: str | None) -> int:
    if value is None:
        return 1
    try:
        return max(1, min(int(str(value).strip()), 1000))
    except ValueError:
        return 1


def parse_html_table(text: str) -> Table:
    parser = _TableParser()
    parser.feed(_OPEN_LT.sub("&lt;", text))
    parser.close()
    parser.table.rows = [row for row in parser.table.rows if row]
    return parser.table


def find_html_tables(text: str) -> list[re.Match]:
    """Each `<table ...>...</table>` in text (an unterminated one runs to the end)."""
    return list(_TABLE.finditer(text))


def find_markdown_tables(text: str) -> list[re.Match]:
    """Each pipe table (header line, --- separator, rows) in text."""
    return list(_PIPE_TABLE.finditer(text))


def parse_markdown_table(text: str) -> Table | None:
    """A pipe table (header, --- separator, rows) anywhere in text, or None."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(_PIPE_SEPARATOR, lines[i + 1]):
            rows = [lines[i]] + list(itertools.takewhile(lambda ln: ln.startswith("|"), lines[i + 2:]))
            return Table([[Cell(html.unescape(c.strip()), header=(r == 0)) for c in _split_pipes(row)]
                          for r, row in enumerate(rows)])
    return None


def _split_pipes(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def to_pipe_table(table: Table) -> str:
    """Markdown pipe table, first row as the header; pipes escaped, line breaks as <br>."""
    grid = table.grid(repeat_spans=False)
    if not grid:
        return ""

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", "<br>") for c in cells) + " |"

    return "\n".join([line(grid[0]), "|" + "---|" * len(grid[0])] + [line(r) for r in grid[1:]])


def to_html_table(table: Table) -> str:
    """Balanced HTML rebuilt from the parsed cells (spans kept, text escaped), one row per line.

    Rebuilding rather than passing the model's HTML through closes what truncation left open and
    keeps blank lines out, so a Markdown renderer sees one HTML block that ends where the table does.
    """
    def cell(c: Cell) -> str:
        tag = "th" if c.header else "td"
        spans = "".join(f' {name}="{n}"' for name, n in (("rowspan", c.rowspan), ("colspan", c.colspan)) if n > 1)
        return f"<{tag}{spans}>{html.escape(c.text, quote=False).replace(chr(10), '<br>')}</{tag}>"

    return "\n".join(["<table>"] + ["<tr>" + "".join(map(cell, row)) + "</tr>" for row in table.rows] + ["</table>"])
