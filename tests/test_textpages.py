import hashlib
from pathlib import Path

import pytest

from dsocr_cli.fonts import Typeface, find_typeface
from dsocr_cli.textpages import PageStyle, TextBlock, markdown_blocks, plain_blocks, render_pages, text_to_pages, wrap

SAMPLE = Path(__file__).parent.parent / "fixtures" / "compress" / "sample.md"
BUILTIN = Typeface(None, None, None)   # Pillow's own font: the same on every machine


def digest(pages) -> list[str]:
    return [hashlib.sha256(p.image.tobytes()).hexdigest() for p in pages]


def test_rendering_is_deterministic():
    text = SAMPLE.read_text(encoding="utf-8")
    first = digest(text_to_pages(text, BUILTIN, markdown=True))
    assert first == digest(text_to_pages(text, BUILTIN, markdown=True))
    assert first != digest(text_to_pages(text.replace("page", "sheet"), BUILTIN, markdown=True))
    assert first != digest(text_to_pages(text, BUILTIN, PageStyle(font_size=17), markdown=True))


def test_rendering_is_deterministic_with_a_system_font():
    typeface = find_typeface()
    if typeface.regular is None:
        pytest.skip("no TrueType font installed")
    text = SAMPLE.read_text(encoding="utf-8")
    assert digest(text_to_pages(text, typeface)) == digest(text_to_pages(text, typeface))


def test_wrap_keeps_every_character_and_fits_the_width():
    font = BUILTIN.font("regular", 20)
    text = "A fairly ordinary sentence that needs wrapping,\nthen a hard break and Pneumonoultramicroscopicsilicovolcanoconiosis."
    lines = wrap(text, font, 200)
    assert "".join(lines) == text
    assert all(font.getlength(line.rstrip()) <= 200 for line in lines)
    assert any(line.endswith("wrapping,\n") for line in lines)             # the hard break ends a line
    assert not any("Pneumonoultramicroscopicsilicovolcanoconiosis" in line for line in lines)  # broken up


def test_wrap_breaks_cjk_between_characters():
    font = BUILTIN.font("regular", 20)
    text = "中" * 40
    lines = wrap(text, font, 100)
    assert len(lines) > 1 and "".join(lines) == text


def test_pages_split_the_text_without_losing_any():
    text = SAMPLE.read_text(encoding="utf-8") * 2
    blocks = markdown_blocks(text)
    pages = render_pages(blocks, BUILTIN, PageStyle(font_size=24))
    assert len(pages) >= 3
    assert all(p.image.size == (1190, 1684) and p.image.mode == "RGB" for p in pages)
    on_pages = " ".join(p.text for p in pages).split()
    assert on_pages == " ".join(b.text for b in blocks).split()


def test_empty_text_gives_no_pages():
    assert text_to_pages(" \n\n ", BUILTIN) == []


def test_plain_text_is_reflowed_but_keeps_lists_and_indented_lines():
    text = "A paragraph wrapped\nat a narrow width.\n- first item\n- second item\n    indented code\n\n\nNext paragraph.\r\n"
    assert plain_blocks(text) == [
        TextBlock("A paragraph wrapped at a narrow width.\n- first item\n- second item\n    indented code"),
        TextBlock("Next paragraph."),
    ]


def test_markdown_is_drawn_without_its_markup():
    text = ("# Title with *emphasis*\n\nSome **bold** text\nover two lines, a [link](http://example.org) "
            "and `code`.\n\n- one\n- two\n\n3. three\n\n> quoted\n\n```\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert markdown_blocks(text) == [
        TextBlock("Title with emphasis", "h1"),
        TextBlock("Some bold text over two lines, a link and code."),
        TextBlock("\u2022 one"),
        TextBlock("\u2022 two"),
        TextBlock("3. three"),
        TextBlock("quoted", level=1),
        TextBlock("x = 1", "code"),
        TextBlock("a | b"),
        TextBlock("1 | 2"),
    ]
