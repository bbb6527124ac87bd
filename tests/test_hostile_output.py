"""Model output is data: bounded cost for any output, bad boxes flagged, figure words not taken for
SMILES, links that cannot run code or fetch. Quadratic work is caught by how time grows with size
(a ratio, so a loaded machine does not fail it), memory by the size of what comes out."""
from __future__ import annotations

import time

import pytest
from markdown_it import MarkdownIt

from dsocr_cli import chem
from dsocr_cli.charts import parse_chart
from dsocr_cli.figures import read_figure
from dsocr_cli.grounding import MAX_BOXES, parse_blocks, parse_boxes
from dsocr_cli.markdown import render_page
from dsocr_cli.quantities import parse_cell
from dsocr_cli.safe_links import defuse_links, is_safe_destination
from dsocr_cli.tables import MAX_GRID, parse_html_table


def growth(work, make, small: int = 4_000, large: int = 40_000) -> float:
    """How much longer `work(make(large))` takes than `work(make(small))`: ~10 linear, ~100 quadratic."""
    def best(n):
        text = make(n)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            work(text)
            times.append(time.perf_counter() - start)
        return min(times)
    return best(large) / max(best(small), 1e-4)


def page(text):
    return render_page(text, 1, (100, 100))


@pytest.mark.parametrize("name, work, make", [
    ("unclosed inline math", page, lambda n: "\\(" * (n // 2)),
    ("unclosed display math", page, lambda n: "\\[" * (n // 2)),
    ("unclosed math with text", page, lambda n: "\\( a " * (n // 5)),
    ("LaTeX line breaks", page, lambda n: "\\\\[" * (n // 3)),
    ("unfinished table tags", page, lambda n: "<table><td>" + "<td " * (n // 4)),
    ("a run of backticks", page, lambda n: "`" * n + " ``x`" * 10),
    ("spaces after a sign", parse_chart, lambda n: "-" + " " * n + "1"),
    ("spaces inside a value", parse_chart, lambda n: "a: 1" + " " * n + "x"),
    ("a line of spaces", parse_chart, lambda n: "a" + " " * n + "b"),
])
def test_work_grows_linearly_with_hostile_output(name, work, make):
    assert growth(work, make) < 40, name


def test_spans_are_clamped_in_total_not_per_cell():
    ten = "<table>" + '<tr><td rowspan="1000" colspan="1000">x</td></tr>' * 10 + "</table>"
    assert len(ten) < 600
    grid = parse_html_table(ten).grid()
    assert len(grid) == 10 and sum(map(len, grid)) <= MAX_GRID + 10
    one_row = "<table><tr>" + '<td rowspan="1000" colspan="1000">x</td>' * 10 + "</tr></table>"
    assert sum(map(len, parse_html_table(one_row).grid())) <= MAX_GRID
    # ordinary spans are untouched: a rowspan inside the table, a colspan over two columns
    grid = parse_html_table("<table><tr><td rowspan=2>a</td><td colspan=2>b</td></tr><tr><td>c</td><td>d</td></tr></table>").grid()
    assert grid == [["a", "b", "b"], ["a", "c", "d"]]


def test_a_rowspan_stops_at_the_last_row():
    assert parse_html_table("<table><tr><td rowspan=5>a</td><td>b</td></tr></table>").grid() == [["a", "b"]]


def test_a_box_coordinate_too_big_for_a_float_is_a_flagged_bad_box():
    boxes, problems = parse_boxes("[[" + "9" * 400 + ", 1, 2, 3], [10, 20, 30, 40]]")
    assert boxes == [(10, 20, 30, 40)]
    assert len(problems) == 1 and "no page can hold" in problems[0] and len(problems[0]) < 120
    rendered = page("<|ref|>image<|/ref|><|det|>[[" + "9" * 400 + ", 1, 2, 3]]<|/det|>\ncaption")
    assert rendered.figures == [] and any("no page can hold" in p for p in rendered.problems)


def test_boxes_past_the_page_limit_are_dropped_and_noted():
    many = "".join(f"<|ref|>image<|/ref|><|det|>[{'[1, 1, 5, 5], ' * 300}[1, 1, 5, 5]]<|/det|>\n" for _ in range(3))
    blocks = parse_blocks(many)
    assert sum(len(b.boxes) for b in blocks) == MAX_BOXES
    assert "past 500 on the page" in blocks[1].problems[-1] and "past" in blocks[2].problems[-1]


def test_a_cell_with_thousands_of_digits_stays_text():
    assert parse_cell("9" * 5000).number is None
    chart = parse_chart("<table><tr><th>a</th><th>b</th></tr><tr><td>x</td><td>" + "9" * 5000 + "</td></tr></table>")
    assert chart.rows[0][1].number is None and chart.rows[0][1].text == "9" * 5000
    assert parse_cell("1,234.5 kg").number == 1234.5          # ordinary cells unchanged


@pytest.mark.parametrize("word", ["CNN", "OK", "Logo", "H2O", "COVID-19", "Fig.1", "CCO", "NO"])
def test_a_one_word_figure_reading_is_not_taken_for_a_smiles(word):
    reading = read_figure(word)
    assert reading.kind == "text" and reading.smiles_error is None


@pytest.mark.parametrize("raw", ["c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCCCCC", "<smiles>CNN</smiles>", "SMILES: CCO"])
def test_real_smiles_evidence_still_reads_as_chemistry(raw):
    assert read_figure(raw).kind == "chemistry"


@pytest.mark.parametrize("smiles, message", [
    ("C1CC1" * 500, "characters long"),            # 500 rings: minutes of drawing before
    ("C" * 100_000, "characters long"),            # a 100,000-atom chain: minutes of checking before
    ("C1CC1" * 66 + "CCC", "atoms; dsocr checks at most 200"),
])
def test_rdkit_gets_only_structures_of_bounded_size(smiles, message):
    with pytest.raises(chem.ChemError, match=message):
        chem.validate_smiles(smiles)
    assert read_figure(f"<smiles>{smiles}</smiles>").smiles_error is not None


def test_the_largest_structure_allowed_validates_and_draws():
    molecule = chem.validate_smiles("C1CC1" * 66 + "CC")
    assert chem.draw_molecule(molecule, "svg").startswith(b"<?xml")


HOSTILE_LINKS = ("[x](javascript:alert(1)) [d](data:text/html;base64,PHNjcmlwdD4=) [v]( JAVASCRIPT:x) "
                 "[e](jav&#x09;ascript:x) [f](javascript&#58;x) [h](java\\script:x) [a [b] c](vbscript:x) "
                 "<javascript:alert(1)> <a href=\"javascript:x\">a</a> <span onclick=\"x\">s</span> "
                 "![remote](https://tracker.example/pixel.png) ![local](../../etc/passwd) [r][1]\n\n"
                 "[1]: javascript:alert(2)\n\n<img src=x onerror=alert(1)>")


def test_model_links_never_render_live_scripts_or_remote_images():
    markdown = page(HOSTILE_LINKS).markdown
    rendered = MarkdownIt("commonmark").render(markdown)      # raw HTML passes: the strictest viewer
    assert "<img" not in rendered and "<a href=\"javascript" not in rendered.lower()
    assert "href=\"data:" not in rendered and "vbscript" not in rendered.split("href=")[-1][:20]
    assert "<span onclick" not in rendered and "<a href" not in rendered
    assert "tracker.example/pixel.png" in rendered          # the text the model wrote stays visible


def test_ordinary_links_and_our_own_figures_stay():
    raw = "See [the site](https://example.com/a) or [mail](mailto:a@b.c) and [section](#intro) <https://x.org>."
    rendered = MarkdownIt("commonmark").render(page(raw).markdown)
    assert 'href="https://example.com/a"' in rendered and 'href="mailto:a@b.c"' in rendered
    assert 'href="#intro"' in rendered and 'href="https://x.org"' in rendered
    figure = page("<|ref|>image<|/ref|><|det|>[[10, 10, 500, 500]]<|/det|>")
    assert figure.markdown == "![](p1_fig1.png)"


@pytest.mark.parametrize("destination, safe", [
    ("https://a.b", True), ("HTTP://a.b", True), ("mailto:x@y", True), ("#top", True), ("a/b.html", True),
    ("javascript:x", False), ("JaVaScRiPt:x", False), ("java&#x0A;script:x", False), ("data:x", False),
    ("file:///etc/passwd", False), ("<vbscript:x>", False),
])
def test_destinations_are_judged_as_a_renderer_reads_them(destination, safe):
    assert is_safe_destination(destination) is safe


def test_code_keeps_links_verbatim():
    assert page("`[x](javascript:y)`").markdown == "`[x](javascript:y)`"
    assert defuse_links("plain text") == "plain text"
