"""A chart as the model parses it ("Parse the figure.") -> a data table: columns, numbers, units.

The model was trained to turn a chart into an HTML table (the DeepSeek-OCR paper, Fig. 6a); it
may also write a Markdown pipe table, or "key: value" lines for a single series, and a title as
text before the table or as a first row over every column. Series are taken as columns, as
written (no transposing). Merged header cells (a group over several series) become
"Group / Series" column names. Anything odd is noted in `problems`, never fixed by guessing.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass, field

from .grounding import strip_grounding
from .quantities import CellValue, parse_cell, unit_fits
from .tables import Cell, Table, find_html_tables, find_markdown_tables, parse_html_table, parse_markdown_table, to_pipe_table

# The key starts with a non-space, so the spaces before it have one reading (no quadratic backtracking).
_KEY_VALUE = re.compile(r"\s*(?:[-*•]\s+)?(?P<key>[^:：|<>\s][^:：|<>]{0,79}?)\s*[:：]\s*(?P<value>\S(?:.*\S)?)\s*")
_TITLE_KEYS = {"title", "chart title", "figure title"}
_HEADER_UNIT = re.compile(r"[(\[]\s*([^()\[\]\d]{1,20}?)\s*[)\]]")   # "Revenue ($M)", "Share [%] / 2023"
_EMPHASIS = re.compile(r"^(?:#+\s*|\*\*|__)|(?:\*\*|__)$")


@dataclass
class ChartTable:
    title: str | None
    columns: list[str]
    rows: list[list[CellValue]]
    units: list[str | None]          # one per column; None when unknown or mixed
    raw: str                         # the model output the table was read from
    problems: list[str] = field(default_factory=list)


def parse_charts(raw: str) -> list[ChartTable]:
    """Every table in the output, in order; "key: value" lines when there is no table."""
    text = strip_grounding(raw)
    charts, end = [], 0
    for start, stop, table, problems in _tables(text):
        chart = _from_table(table, _title_line(text[end:start]), raw, problems)
        if chart is not None:
            charts.append(chart)
        end = stop
    if charts:
        return charts
    chart = _from_key_values(text, raw)
    return [chart] if chart else []


def parse_chart(raw: str) -> ChartTable | None:
    """The first table in the output (None: no table); more tables are noted in its problems."""
    charts = parse_charts(raw)
    if not charts:
        return None
    if len(charts) > 1:
        charts[0].problems.append(f"{len(charts) - 1} more table(s) after this one in the output")
    return charts[0]


def _tables(text: str) -> list[tuple[int, int, Table, list[str]]]:
    """(start, end, table, problems) of each HTML and pipe table, in text order."""
    found = []
    for m in find_html_tables(text):
        closed = m.group(0).rstrip().lower().endswith("</table>")
        found.append((m.start(), m.end(), parse_html_table(m.group(0)),
                      [] if closed else ["table not closed: the output may be truncated"]))
    for m in find_markdown_tables(text):
        if not any(start <= m.start() < end for start, end, _, _ in found):
            found.append((m.start(), m.end(), parse_markdown_table(m.group(0)), []))
    return sorted(found, key=lambda t: t[0])


def _title_line(text: str) -> str | None:
    """The line just before a table, as its title ("Title: X", "## X" and "**X**" read as X)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    line = _EMPHASIS.sub("", lines[-1]).strip()
    key_value = _KEY_VALUE.fullmatch(line)
    if key_value and key_value["key"].lower() in _TITLE_KEYS:
        return key_value["value"]
    return line.rstrip(":：").strip() or None


def _from_table(table: Table, title: str | None, raw: str, problems: list[str]) -> ChartTable | None:
    rows, grid = table.rows, table.grid()
    if not grid:
        return None
    width = len(grid[0])
    if len(rows) > 1 and width > 1 and len(rows[0]) == 1 and rows[0][0].colspan >= width:
        title, rows, grid = rows[0][0].text, rows[1:], grid[1:]      # a title row over every column
    height = _header_height(rows, len(grid))
    columns = [_column_name(parts) for parts in zip(*grid[:height])]
    body = [[parse_cell(text) for text in row] for row in grid[height:] if any(t.strip() for t in row)]
    return _chart(title, columns, body, raw, problems)


def _header_height(rows: list[list[Cell]], height: int) -> int:
    """Header rows: leading all-<th> rows, rows under a row-spanning first-row cell, or two when
    the first row groups series with colspans; always leaving a data row when there is one."""
    leading_th = sum(1 for _ in itertools.takewhile(lambda row: row and all(c.header for c in row), rows))
    spanned = max(c.rowspan for c in rows[0])
    grouped = 2 if any(c.colspan > 1 for c in rows[0]) else 1
    return max(1, min(max(leading_th, spanned, grouped), height - 1))


def _column_name(parts: tuple[str, ...]) -> str:
    """Header cells above a column, top to bottom, repeats (from merged cells) once: "Group / Series"."""
    names: list[str] = []
    for part in (" ".join(p.split()) for p in parts):
        if part and (not names or names[-1] != part):
            names.append(part)
    return " / ".join(names)


def _from_key_values(text: str, raw: str) -> ChartTable | None:
    """ "Label: value" lines as a two-column table; needs at least two numeric values."""
    title, rows, skipped = None, [], []
    for line in filter(str.strip, text.splitlines()):
        match = _KEY_VALUE.fullmatch(_EMPHASIS.sub("", line.strip()))
        if match and match["key"].lower() in _TITLE_KEYS:
            title = match["value"]
        elif match:
            rows.append([parse_cell(match["key"]), parse_cell(match["value"])])
        elif rows:
            skipped.append(line.strip())
        else:
            title = title or _title_line(line)
    if sum(row[1].number is not None for row in rows) < 2:
        return None
    problems = [f"{len(skipped)} line(s) not in 'label: value' form, kept only in raw"] if skipped else []
    return _chart(title, ["label", "value"], rows, raw, problems)


def _chart(title: str | None, columns: list[str], rows: list[list[CellValue]], raw: str,
           problems: list[str]) -> ChartTable:
    units = []
    for name, cells in zip(columns, zip(*rows) if rows else [()] * len(columns)):
        unit, problem = _column_unit(name, cells)
        units.append(unit)
        problems += [problem] if problem else []
    return ChartTable(title, columns, rows, units, raw, problems)


def _column_unit(name: str, cells) -> tuple[str | None, str | None]:
    """The unit all numbers in a column share (from the header or the cells), else None and why."""
    numbers = [c for c in cells if c.number is not None]
    if not numbers:
        return None, None
    header = ([None] + _HEADER_UNIT.findall(name))[-1]
    units = {c.unit for c in numbers}
    if header and all(unit_fits(u, header) for u in units):
        return header, None
    if not header and len(units) == 1:
        return units.pop(), None
    listed = ", ".join(sorted(u or "none" for u in units | ({header} if header else set())))
    return None, f"column {name!r} mixes units ({listed}); those cells keep their text"


def cell_data(cell: CellValue, unit: str | None) -> int | float | str | None:
    """What data consumers get: the number when its unit is the column's, None when missing, else the text."""
    if cell.number is not None and unit_fits(cell.unit, unit):
        return cell.number
    return None if cell.missing else cell.text


def _csv_name(name: str, unit: str | None) -> str:
    if unit is None or f"({unit})" in name or f"[{unit}]" in name:
        return name
    return f"{name} ({unit})" if name else unit


def to_csv(chart: ChartTable) -> str:
    """RFC 4180 CSV (CRLF, minimal quoting): a header row with units in the names ("Share (%)"),
    then numbers without units; missing cells empty; text cells as written."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_name(n, u) for n, u in zip(chart.columns, chart.units)])
    for row in chart.rows:
        values = (cell_data(c, u) for c, u in zip(row, chart.units))
        writer.writerow(["" if v is None else v for v in values])
    return out.getvalue()


def to_json(chart: ChartTable) -> dict:
    return {"title": chart.title, "columns": chart.columns, "units": chart.units,
            "rows": [[cell_data(c, u) for c, u in zip(row, chart.units)] for row in chart.rows],
            "raw": chart.raw, "problems": chart.problems}


def to_markdown(chart: ChartTable) -> str:
    """A pipe table of the cells as written, the title (if any) as a paragraph above it."""
    table = Table([[Cell(name, header=True) for name in chart.columns]]
                  + [[Cell(c.text) for c in row] for row in chart.rows])
    return (f"{chart.title}\n\n" if chart.title else "") + to_pipe_table(table)
