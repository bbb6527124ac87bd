"""annotate.py: boxes land where the grid says, in the label's colour, tagged; one PDF page per image."""
from __future__ import annotations

import pymupdf
import pytest
from PIL import Image

from dsocr_cli.annotate import FILL_ALPHA, annotate_page, annotation_pdf, colour_of
from dsocr_cli.grounding import Block, parse_blocks, to_pixels
from golden import raw_fixture


def test_boxes_drawn_filled_and_tagged_in_label_colour():
    page = Image.new("RGB", (1000, 500), "white")
    blocks = [Block("text", [(100, 400, 499, 799)], "x"), Block("title", [(600, 100, 899, 199)], "y")]
    out = annotate_page(page, blocks)
    assert out.size == page.size and out.mode == "RGB"
    assert page.getpixel((300, 300)) == (255, 255, 255)               # the input is left alone
    x1, y1, x2, y2 = to_pixels((100, 400, 499, 799), *page.size)
    assert out.getpixel((x1, (y1 + y2) // 2)) == colour_of("text")   # outline
    inside = out.getpixel(((x1 + x2) // 2, (y1 + y2) // 2))
    expected = tuple(round(255 + (c - 255) * FILL_ALPHA / 255) for c in colour_of("text"))
    assert all(abs(a - b) <= 1 for a, b in zip(inside, expected))    # translucent fill
    tag_row = [out.getpixel((x, y1 - 3)) for x in range(x1, x1 + 40)]
    assert colour_of("text") in tag_row and any(p != colour_of("text") for p in tag_row)   # patch with lettering


def test_tag_goes_inside_a_box_at_the_top_edge():
    out = annotate_page(Image.new("RGB", (400, 400), "white"), [Block("table", [(0, 0, 999, 999)], "")])
    assert colour_of("table") in [out.getpixel((x, 8)) for x in range(5, 40)]


def test_colours_per_label_are_stable_and_distinct():
    assert colour_of("sidebar") == colour_of("sidebar")
    known = ["title", "sub_title", "text", "image", "table", "equation"]
    assert len({colour_of(label) for label in known}) == len(known)


def test_real_looking_page_annotates():
    blocks = parse_blocks(raw_fixture("figures"))
    out = annotate_page(Image.new("L", (850, 1100), 255), blocks)     # grey input comes back RGB
    assert out.mode == "RGB" and out.size == (850, 1100)


def test_annotation_pdf_has_one_page_per_image():
    images = [Image.new("RGB", (288, 144), "white"), Image.new("RGB", (144, 288), "red")]
    pdf = pymupdf.open(stream=annotation_pdf(images, dpi=144), filetype="pdf")
    assert pdf.page_count == 2
    assert [tuple(round(v) for v in page.rect[2:]) for page in pdf] == [(144, 72), (72, 144)]   # points at 144 dpi
    with pytest.raises(ValueError):
        annotation_pdf([])
