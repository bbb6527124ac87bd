"""layout.py: golden layout JSON, flags, and the round trip that `--from-raw` relies on."""
from __future__ import annotations

import json

import pytest

from dsocr_cli.errors import DsocrError
from dsocr_cli.layout import VERSION, document_layout, page_layout, raw_pages_from_layout
from dsocr_cli.pages import ParsedPage
from dsocr_cli.markdown import render_page
from golden import assert_golden, raw_fixture

PAGE_SIZE = (1000, 1400)
# golden name -> (raw fixture, finish_reason)
CASES = {"figures": "eos", "tables": "eos", "truncated": "length", "malformed": "repetition", "free_ocr": "eos"}


def layout_of(name: str) -> dict:
    raw, finish_reason = raw_fixture(name), CASES[name]
    problems = render_page(raw, 3, PAGE_SIZE, finish_reason=finish_reason).problems
    return page_layout(ParsedPage(3, raw, finish_reason, PAGE_SIZE), problems)


@pytest.mark.parametrize("name", CASES)
def test_golden_layout(name):
    assert_golden(f"{name}.layout.json", json.dumps(layout_of(name), indent=1, ensure_ascii=False) + "\n")


def test_blocks_carry_grid_and_pixel_boxes_in_reading_order():
    page = layout_of("figures")
    assert [b["label"] for b in page["blocks"]] == ["title", "sub_title", "image", "image_caption", "image",
                                                    "image_caption", "sub_title", "image", "text"]
    two = page["blocks"][4]
    assert two["boxes"] == [[100, 440, 480, 640], [520, 440, 900, 640]]
    assert two["boxes_px"] == [[100, 616, 480, 896], [520, 616, 900, 896]]
    assert page["size"] == [1000, 1400] and page["flags"] == [] and page["raw"] == raw_fixture("figures")


def test_flags():
    assert layout_of("truncated")["flags"] == ["incomplete"]
    assert layout_of("malformed")["flags"] == ["incomplete", "malformed"]
    assert layout_of("free_ocr")["flags"] == ["ungrounded"]
    assert page_layout(ParsedPage(1, "", "eos", PAGE_SIZE))["flags"] == []


def test_document_round_trip_through_json():
    pages = [layout_of("tables"), layout_of("truncated"), page_layout(ParsedPage(4, error="PageError: broken stream"))]
    doc = json.loads(json.dumps(document_layout("report.pdf", pages, model="deepseek-ai/DeepSeek-OCR", mode="gundam")))
    assert doc["version"] == VERSION and doc["source"] == "report.pdf"
    assert doc["meta"] == {"model": "deepseek-ai/DeepSeek-OCR", "mode": "gundam"}
    assert raw_pages_from_layout(doc) == [(3, raw_fixture("tables"), "eos", PAGE_SIZE, None),
                                          (3, raw_fixture("truncated"), "length", PAGE_SIZE, None),
                                          (4, "", "error", None, "PageError: broken stream")]


@pytest.mark.parametrize("doc, message", [
    ([], "not a dsocr layout file"),
    ({"pages": []}, "not a dsocr layout file"),
    ({"version": VERSION + 1, "pages": []}, "version 2 is not one this dsocr reads"),
    ({"version": 1, "pages": [{"page": 1, "size": [10, 10]}]}, "page entry 1 lacks"),
    ({"version": 1, "pages": [{"page": 1, "raw": "x", "size": [10]}]}, "page entry 1 lacks"),
    ({"version": 1, "pages": [{"page": "1", "raw": "x", "size": [10, 10]}]}, "page entry 1 has a wrong type"),
    ({"version": 1, "pages": [{"page": 1, "raw": "x", "size": [0, 10]}]}, "page entry 1 has a wrong type"),
    ({"version": 1, "pages": [{"page": 1, "raw": "x", "size": None}]}, "page entry 1 lacks"),
])
def test_bad_layout_files_are_refused_in_one_line(doc, message):
    with pytest.raises(DsocrError, match=message):
        raw_pages_from_layout(doc)
