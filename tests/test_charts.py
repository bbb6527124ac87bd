"""Chart parsing: the model's tables (HTML, pipes, "key: value") -> columns, numbers, units, CSV/JSON."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from dsocr_cli.charts import ChartTable, parse_chart, parse_charts, to_csv, to_json, to_markdown
from dsocr_cli.quantities import CellValue, parse_cell
from dsocr_cli.tables import find_markdown_tables, parse_markdown_table

DEEP = Path(__file__).resolve().parent.parent / "fixtures" / "deep"


def chart(name: str) -> ChartTable:
    result = parse_chart((DEEP / name).read_text(encoding="utf-8"))
    assert result is not None
    return result


@pytest.mark.parametrize("text, number, unit", [
    ("1,234", 1234, None), ("1 234", 1234, None), ("1\u202f234", 1234, None), ("12 345 678", 12345678, None),
    ("1,234,567.89", 1234567.89, None), ("1.234", 1.234, None), ("1.234.567", 1234567, None),
    ("1.234,5", 1234.5, None), ("1 234,5", 1234.5, None), ("12,5", 12.5, None), ("0,500", 0.5, None),
    (".5", 0.5, None), ("2.5E-3", 0.0025, None), ("2019", 2019, None),
    ("12.5%", 12.5, "%"), ("-3 %", -3, "%"), ("+4", 4, None), ("\u22123.5", -3.5, None),
    ("$3.2M", 3.2, "$M"), ("-$5", -5, "$"), ("$-5", -5, "$"), ("€1.200,50", 1200.5, "€"), ("US$ 7", 7, "US$"),
    ("USD 5", 5, "USD"), ("5 USD", 5, "USD"), ("45 kg", 45, "kg"), ("20 °C", 20, "°C"), ("3 m/s", 3, "m/s"),
    ("5 km²", 5, "km²"), ("100 million", 100, "million"), ("(12)", -12, None), ("($1,234)", -1234, "$"),
])
def test_numbers_with_one_reading(text, number, unit):
    cell = parse_cell(text)
    assert (cell.number, cell.unit, cell.text) == (number, unit, text)
    assert type(cell.number) is type(number)


@pytest.mark.parametrize("text", [
    "", "-", "—", "N/A", "n/a", "Q1", "1st", "1990s", "~12", "<5", "10-20", "--5", "(-5)", "12.", "1,23,456",
    "2019 2020", "GDP 2020", "Apple", "12 (est)",
])
def test_text_placeholders_and_ambiguous_cells_get_no_number(text):
    assert parse_cell(text) == CellValue(text)


def test_placeholders_read_as_missing_but_keep_their_text():
    assert [parse_cell(t).missing for t in ("", " - ", "—", "N/A", "0", "Apple")] == [True] * 4 + [False] * 2
    assert parse_cell("N/A").text == "N/A"


def test_html_chart_with_title_line_decimal_comma_and_empty_cell():
    c = chart("chart-bar-html.txt")
    assert c.title == "Average monthly rainfall in Lisbon"
    assert c.columns == ["Month", "Rainfall (mm)"] and c.units == [None, "mm"]
    assert [r[1].number for r in c.rows] == [99.9, 81.2, 57, 64.5, None]
    assert c.rows[1][1].text == "81,2" and c.rows[4][1] == CellValue("")
    assert c.problems == []


def test_merged_header_cells_become_group_slash_series_columns():
    c = chart("chart-grouped-header.txt")
    assert c.columns == ["Region", "Revenue ($M) / 2022", "Revenue ($M) / 2023", "Margin / 2022",
                         "Margin / 2023", "Headcount"]
    assert c.units == [None, "$M", "$M", "%", "%", None]
    europe = c.rows[1]
    assert [v.number for v in europe] == [None, 980, -45.5, -3.2, None, 8150]
    assert europe[4].missing and europe[4].text == "N/A"


def test_grouped_header_golden_csv_and_json():
    c = chart("chart-grouped-header.txt")
    assert to_csv(c) == (DEEP / "chart-grouped-header.csv").read_bytes().decode("utf-8")
    assert to_json(c) == json.loads((DEEP / "chart-grouped-header.json").read_text(encoding="utf-8"))


def test_csv_is_rfc4180_and_reads_back():
    text = to_csv(chart("chart-grouped-header.txt"))
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[3][0] == "Asia, Pacific" and rows[3][1] == "" and rows[3][2] == "312.75"
    weird = ChartTable(None, ['say "hi"', "b"], [[parse_cell('a "q"'), parse_cell("x\ny")]], [None, None], "")
    assert to_csv(weird) == '"say ""hi""",b\r\n"a ""q""","x\ny"\r\n'


def test_markdown_chart_with_units_in_cells_and_heading_title():
    c = chart("chart-markdown.txt")
    assert c.title == "Body weight of adult animals"
    assert c.units == [None, "kg", "kg"]
    assert to_json(c)["rows"] == [["Red fox", 6.5, 5.4], ["Badger", 12, 10.8], ["Otter", 10, 7]]
    assert to_csv(c).splitlines()[0] == "Species,Male (kg),Female (kg)"


def test_key_value_lines_make_a_label_value_table():
    c = chart("chart-key-value.txt")
    assert c.title == "Browser market share 2024"
    assert c.columns == ["label", "value"] and c.units == [None, "%"]
    assert to_json(c)["rows"][0] == ["Chrome", 65.4]
    assert to_csv(c) == (DEEP / "chart-key-value.csv").read_bytes().decode("utf-8")


def test_key_value_needs_two_numbers_and_notes_unread_lines():
    assert parse_chart("Title: Sales\nNote: values are estimates") is None
    c = parse_chart("A: 1\nB: 2\nsee appendix")
    assert len(c.rows) == 2 and c.problems == ["1 line(s) not in 'label: value' form, kept only in raw"]


def test_several_tables_each_with_its_title():
    raw = (DEEP / "chart-two-tables.txt").read_text(encoding="utf-8")
    charts = parse_charts(raw)
    assert [c.title for c in charts] == ["Figure 2a: Exports by year", "Figure 2b: Imports by year"]
    assert [c.units for c in charts] == [[None, "€M"], [None, "€M"]]
    assert to_json(charts[1])["rows"] == [[2019, 998.7], [2020, 1020.3]]
    first = parse_chart(raw)
    assert first.title == charts[0].title and first.problems == ["1 more table(s) after this one in the output"]


def test_truncated_table_keeps_rows_and_says_so():
    c = chart("chart-truncated.txt")
    assert c.title == "Global temperature anomaly"                      # the full-width first row
    assert c.columns == ["Decade", "Land", "Ocean"] and [r[0].text for r in c.rows] == ["1990s", "2000s", "2010s"]
    assert c.problems[0] == "table not closed: the output may be truncated"
    assert c.units == [None, "°C", None] and "'Ocean' mixes units" in c.problems[1]
    assert to_json(c)["rows"][2] == ["2010s", 1.12, 0.57]
    assert to_json(c)["rows"][0][2] == "0.31 °C"          # a number whose unit differs from its column stays text


def test_currency_in_cells_fits_a_scaled_header_unit_but_other_units_do_not():
    raw = "<table><tr><td>Year</td><td>Sales ($M)</td><td>Mass (kg)</td></tr><tr><td>2023</td><td>$3.5</td><td>4 g</td></tr></table>"
    c = parse_chart(raw)
    assert c.units == [None, "$M", None] and to_json(c)["rows"] == [[2023, 3.5, "4 g"]]


def test_header_only_table_and_prose_without_table():
    c = parse_chart("<table><tr><th>A</th><th>B</th></tr></table>")
    assert c.columns == ["A", "B"] and c.rows == [] and c.units == [None, None]
    assert parse_chart((DEEP / "chart-none.txt").read_text(encoding="utf-8")) is None
    assert parse_charts("") == []


def test_to_markdown_shows_cells_as_written():
    md = to_markdown(chart("chart-grouped-header.txt"))
    lines = md.splitlines()
    assert lines[0].startswith("| Region | Revenue ($M) / 2022 |") and lines[1].startswith("|---|")
    assert "| Europe | 980 | (45.5) | -3.2% | N/A | 8 150 |" in lines
    titled = to_markdown(chart("chart-bar-html.txt"))
    assert titled.startswith("Average monthly rainfall in Lisbon\n\n| Month | Rainfall (mm) |")
    piped = ChartTable(None, ["a|b"], [[parse_cell("x|y")]], [None], "")
    assert to_markdown(piped) == "| a\\|b |\n|---|\n| x\\|y |"


def test_json_is_serialisable_and_keeps_raw():
    raw = (DEEP / "chart-bar-html.txt").read_text(encoding="utf-8")
    out = to_json(parse_chart(raw))
    assert json.loads(json.dumps(out)) == out and out["raw"] == raw
    assert set(out) == {"title", "columns", "units", "rows", "raw", "problems"}


def test_grounding_tags_around_a_table_are_ignored():
    raw = "<|ref|>table<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\n<table><tr><td>x</td><td>y</td></tr><tr><td>a</td><td>1</td></tr></table>"
    assert to_json(parse_chart(raw))["rows"] == [["a", 1]]


def test_find_markdown_tables_finds_each_pipe_table():
    text = "intro\n| a | b |\n|---|:--:|\n| 1 | 2 |\ntext\n\n| x |\n| -- |\n| 5 |\nafter\n| no | separator |"
    found = find_markdown_tables(text)
    assert [parse_markdown_table(m.group(0)).grid() for m in found] == [[["a", "b"], ["1", "2"]], [["x"], ["5"]]]
    assert text[found[1].end():] == "\nafter\n| no | separator |"
