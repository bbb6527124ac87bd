"""markdown.py: golden pages, the rules one by one, and a Markdown parser's view of the result."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from PIL import Image, ImageDraw

from dsocr_cli.errors import DsocrError
from dsocr_cli.grounding import strip_grounding, to_pixels
from dsocr_cli.markdown import RenderOptions, join_pages, render_page
from golden import assert_golden, raw_fixture

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "raw-outputs"
PAGE_SIZE = (1000, 1400)
MD = MarkdownIt("commonmark").enable("table")
INLINE_TAGS = r"</?(?:sup|sub|br|b|i|u|s|em|strong|small|mark|del|ins|code|kbd|span)\b[^<>]*>"

# golden name -> (raw fixture, options, finish_reason)
CASES = {
    "tables": ("tables", {}, "eos"),
    "tables-html": ("tables", {"tables": "html"}, "eos"),
    "tables-markdown": ("tables", {"tables": "markdown"}, "eos"),
    "math": ("math", {}, "eos"),
    "math-latex": ("math", {"math": "latex"}, "eos"),
    "figures": ("figures", {"figure_dir": "doc_images/"}, "eos"),
    "furniture": ("furniture", {}, "eos"),
    "furniture-keep": ("furniture", {"keep_headers": True}, "eos"),
    "truncated": ("truncated", {}, "length"),
    "malformed": ("malformed", {}, "repetition"),
    "free_ocr": ("free_ocr", {}, "eos"),
}


def render_case(case: str):
    fixture, options, finish_reason = CASES[case]
    return render_page(raw_fixture(fixture), 3, PAGE_SIZE, options=RenderOptions(**options), finish_reason=finish_reason)


def assert_clean_markdown(md: str) -> None:
    """HTML blocks are whole tables or dsocr's note; inline HTML is only formatting tags."""
    for token in MD.parse(md):
        if token.type == "html_block":
            html = token.content.strip()
            whole_table = html.startswith("<table>") and html.endswith("</table>") and html.count("<table") == 1
            assert whole_table or re.fullmatch(r"<!-- dsocr: [^\n]*-->", html), html
        for child in token.children or []:
            if child.type == "html_inline":
                assert re.fullmatch(INLINE_TAGS, child.content), child.content


def assert_no_words_lost(raw: str, md: str) -> None:
    """Every word of the model's text is still visible once the Markdown is rendered."""
    text = re.sub(r"</?(?:table|tr|td|th|center)\b[^<>]*>|\\coloneqq|\\eqqcolon", " ", strip_grounding(raw))
    words = set(re.findall(r"[A-Za-z]{3,}", text))
    shown = set(re.findall(r"[A-Za-z]{3,}", MD.render(md)))
    assert words <= shown, sorted(words - shown)


def token_types(md: str) -> list[str]:
    return [t.type for t in MD.parse(md) if t.nesting >= 0 and t.level == 0]


@pytest.mark.parametrize("case", CASES)
def test_golden_markdown(case):
    page = render_case(case)
    assert_golden(f"{case}.md", page.markdown + "\n")
    assert_clean_markdown(page.markdown)
    if case != "furniture":
        assert_no_words_lost(raw_fixture(CASES[case][0]), page.markdown)


def test_tables_auto_keeps_html_only_for_merged_cells():
    md = render_case("tables").markdown
    tokens = MD.parse(md)
    assert [t.type for t in tokens].count("table_open") == 1
    assert sum(t.type == "html_block" and 'rowspan="2"' in t.content for t in tokens) == 1
    assert "| North \\| East | 12 | \\$4,100 |" in md             # pipe escaped, $ not math
    assert "| South | $n+1$ | \\<none> |" in md                  # math converted, entity text visible


def test_table_html_anywhere_in_a_block_follows_its_caption():
    md = render_case("tables").markdown
    assert md.index("Table 2. Trips") < md.index('<td rowspan="2">Route</td>')


def test_tables_markdown_and_html_modes():
    assert "<table>" not in render_case("tables-markdown").markdown
    html = render_case("tables-html").markdown
    assert html.count("<table>") == 2 and "table_open" not in [t.type for t in MD.parse(html)]


def test_cut_off_html_table_is_closed_and_escaped():
    raw = raw_fixture("truncated").replace("<td>0.8", "<td>R&amp;D <b>")
    md = render_page(raw, 3, PAGE_SIZE, options=RenderOptions(tables="html"), finish_reason="length").markdown
    assert "<tr><td>2</td><td>R&amp;D</td></tr>\n</table>\n\n<!-- dsocr: page 3" in md
    assert_clean_markdown(md)


def test_titles_keep_the_level_the_model_wrote():
    md = render_case("figures").markdown
    assert md.startswith("# Field Notes on Tidal Pools\n\n### Observed species\n\n")
    assert "\n\n## Method\n\n" in md
    heading = render_page("<|ref|>sub_title<|/ref|><|det|>[[1, 1, 9, 9]]<|/det|>\n###  3.1 Load and\n \\( L_{T} \\) ", 1, PAGE_SIZE)
    assert heading.markdown == "### 3.1 Load and $L_{T}$"
    assert render_page("<|ref|>title<|/ref|><|det|>[[1, 1, 9, 9]]<|/det|>\n#1 in sales", 1, PAGE_SIZE).markdown == "# #1 in sales"


def test_math_dollars():
    md = render_case("math").markdown
    assert "The load $L_{t}$ grows with the number of users $n$, and a seat costs \\$12" in md
    assert "$r := n / k$" in md and "=: Q" in md                     # \coloneqq, \eqqcolon
    assert "\n\n$$\nL_{t} = \\sum_{i=1}^{n} w_{i} \\, x_{i} \\quad (4)\n$$\n\n" in md
    assert "$$\nE = m c^{2} =: Q\n$$" in md                         # equation block without delimiters
    assert "`echo $HOME \\(x\\)`" in md                              # code span untouched
    assert 'cost="$5"\necho "\\[not math\\]"' in md                  # fenced code untouched


def test_math_latex_keeps_delimiters():
    md = render_case("math-latex").markdown
    assert "The load \\( L_{t} \\) grows" in md and "a seat costs $12" in md
    assert "\\[ L_{t} = \\sum" in md and "\\[E = m c^{2} =: Q\\]" in md
    assert "Rewriting gives \\[ r = \\frac{n}{k} \\] for every \\(k > 0\\)." in md


def test_figures_cropped_named_and_captioned():
    page_image = Image.new("RGB", PAGE_SIZE, "white")
    first_box = to_pixels((150, 100, 850, 400), *PAGE_SIZE)
    ImageDraw.Draw(page_image).rectangle(first_box, fill=(200, 0, 0))
    page = render_page(raw_fixture("figures"), 3, PAGE_SIZE, page_image, RenderOptions(figure_dir="doc_images/"))
    assert [f.name for f in page.figures] == ["p3_fig1.png", "p3_fig2.png", "p3_fig3.png", "p3_fig4.png"]
    assert page.figures[0].box == first_box
    assert page.figures[0].image.size == (first_box[2] - first_box[0], first_box[3] - first_box[1])
    assert page.figures[0].image.getpixel((10, 10)) == (200, 0, 0)
    assert [f.caption for f in page.figures] == [
        "Figure 1. Anemones [left] and a hermit crab at low tide.",
        "Figure 2. Two views of the same pool.", "Figure 2. Two views of the same pool.", ""]
    assert "![Figure 1. Anemones \\[left\\] and a hermit crab at low tide.](doc_images/p3_fig1.png)" in page.markdown
    images = [c for t in MD.parse(page.markdown) for c in t.children or [] if c.type == "image"]
    assert [i.attrs["src"] for i in images] == [f"doc_images/p3_fig{k}.png" for k in range(1, 5)]


def test_figure_crop_follows_the_image_resolution():
    raw = "<|ref|>image<|/ref|><|det|>[[0, 0, 499, 999]]<|/det|>\n<|ref|>image<|/ref|><|det|>[[999, 999, 999, 999]]<|/det|>"
    page = render_page(raw, 1, (100, 200), Image.new("RGB", (400, 800)))
    assert page.figures[0].box == (0, 0, 49, 200)                    # page pixels
    assert page.figures[0].image.size == (199, 800)                  # cropped at the image's resolution
    assert page.figures[1].image.size == (1, 1)                      # an empty box still crops one pixel


def test_figure_without_page_image_and_link_with_spaces():
    page = render_page("<|ref|>image<|/ref|><|det|>[[1, 1, 9, 9]]<|/det|>", 2, PAGE_SIZE,
                       options=RenderOptions(figure_dir="my report_images/"))
    assert page.figures[0].image is None
    assert page.markdown == "![](<my report_images/p2_fig1.png>)"


def test_furniture_dropped_unless_kept():
    assert "Harbour Authority" not in render_case("furniture").markdown
    kept = render_case("furniture-keep").markdown
    assert kept.startswith("Harbour Authority") and kept.endswith("Printed on recycled paper\n\n7")


def test_trailing_spaces_only_break_lines_inside_a_block():
    md = render_case("furniture").markdown
    assert md == ("Opening hours:  \nMonday to Friday 8:00-18:00  \nSaturday 9:00-13:00\n\n"
                  "The office is closed on public holidays.")
    assert "hardbreak" in [c.type for t in MD.parse(md) for c in t.children or []]
    assert not re.search(r" +$", render_case("tables").markdown, re.M)


def test_incomplete_page_keeps_text_and_says_so():
    page = render_case("truncated")
    assert page.markdown.endswith("| 2 | 0.8 |\n\n<!-- dsocr: page 3 incomplete (length): the model reached "
                                  "its token limit; the rest of the page is missing -->")
    assert page.problems == ["page 3, block 3 (table): table not closed (output cut off?), closed after its last cell"]
    assert "incomplete" not in render_page(raw_fixture("truncated"), 3, PAGE_SIZE).markdown


def test_malformed_grounding_is_reported_not_dropped():
    page = render_case("malformed")
    assert page.problems == [
        "page 3, block 3 (text): unreadable box data '[[100, 130, 900]]'",
        "page 3, block 4 (sidebar): box [100, 200, 1040, 260] out of range, clamped",
        "page 3, block 5 (text): unterminated <|ref|>",
        "page 3, block 5 (text): no <|det|> boxes",
        "page 3, block 6 (code): code fence not closed (output cut off?), closed at the end of the block",
    ]
    assert "fence" in token_types(page.markdown)
    assert token_types(page.markdown)[-1] == "html_block"            # the note is not swallowed by the code


def test_math_stays_within_a_paragraph():
    md = render_page("a \\( b\n\nc \\) d and \\(e\\)", 1, PAGE_SIZE).markdown
    assert md == "a \\( b\n\nc \\) d and $e$"


def test_text_that_looks_like_html_stays_visible():
    raw = "SQL> alter user <username> identified by <new password>;\n\n<pre>\n\n<!-- x\n\nH<sub>2</sub>O, see <https://example.org>"
    md = render_page(raw, 1, PAGE_SIZE).markdown
    html = MD.render(md)
    assert "&lt;username&gt;" in html and "&lt;new password&gt;" in html
    assert "&lt;pre&gt;" in html and "&lt;!-- x" in html
    assert "H<sub>2</sub>O" in html and 'href="https://example.org"' in html


def test_table_without_cells_is_kept_as_text():
    page = render_page("<|ref|>table<|/ref|><|det|>[[1, 1, 9, 9]]<|/det|>\n<table>NameRole</table>", 1, PAGE_SIZE)
    assert page.markdown == "NameRole"
    assert page.problems == ["page 1, block 1 (table): table without cells, kept as text"]


def test_free_ocr_output_is_markdown_with_tables_and_math_normalised():
    md = render_case("free_ocr").markdown
    assert md.startswith("# Shopping list\n\nApples cost \\$3 and pears \\$4; the total is $3a + 4p$.")
    assert token_types(md).count("table_open") == 2 and "\n\n\n" not in md


def test_options_are_checked():
    with pytest.raises(DsocrError, match="table style"):
        RenderOptions(tables="latex")
    with pytest.raises(DsocrError, match="math style"):
        RenderOptions(math="mathml")


def test_join_pages():
    assert join_pages(["A\n", "", "B"]) == "A\n\nB\n"
    assert join_pages(["A", "B", "C"], "\n\n---\n\n") == "A\n\n---\n\nB\n\n---\n\nC\n"
    assert join_pages(["A", "B"], "<!-- page {page} -->", numbers=[4, 9]) == "A\n\n<!-- page 9 -->\n\nB\n"
    assert token_types(join_pages(["A", "B"], "---")) == ["paragraph_open", "hr", "paragraph_open"]
    assert join_pages([]) == "" and join_pages([""], "---") == ""


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="real samples (../shared/samples/raw-outputs) not present")
@pytest.mark.parametrize("options", [RenderOptions(), RenderOptions(tables="html", math="latex", keep_headers=True),
                                     RenderOptions(tables="markdown")])
def test_real_samples_render(options):
    samples = sorted(SAMPLES.glob("*.txt"))
    assert samples
    for sample in samples:
        raw = sample.read_text(encoding="utf-8")
        page = render_page(raw, 1, (1224, 1584), Image.new("RGB", (1224, 1584)), options)
        assert page.markdown and not page.problems, sample.name
        assert_clean_markdown(page.markdown)
        assert_no_words_lost(raw, page.markdown)
