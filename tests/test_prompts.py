import pytest

from dsocr_cli.prompts import IMAGE_TOKEN_ID, PromptError, build_prompt_ids, load_prompt, prompt_names
from dsocr_cli.tokenizer import Tokenizer

DOCUMENT_TAIL = [201, 128820, 21842, 270, 4940, 304, 2121, 7919, 16]  # official ids, read off a run


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.bundled()


def test_document_prompt_ids_match_official(tok):
    p = build_prompt_ids(tok, "<image>\n<|grounding|>Convert the document to markdown. ", 273)
    assert p.ids == [0] + [IMAGE_TOKEN_ID] * 273 + DOCUMENT_TAIL
    assert len(p.ids) == 283 and p.image_tokens == 273
    assert p.image_mask == [False] + [True] * 273 + [False] * 9


def test_free_ocr_ids(tok):
    assert build_prompt_ids(tok, load_prompt("free-ocr"), 3).ids == [0] + [IMAGE_TOKEN_ID] * 3 + [201, 21431, 126041, 16]


def test_image_anywhere_in_prompt(tok):
    last = build_prompt_ids(tok, "Convert this page.<image>", 2)
    assert last.ids[-2:] == [IMAGE_TOKEN_ID] * 2 and last.ids[0] == 0
    middle = build_prompt_ids(tok, "Look:<image>\nFree OCR.", 2)
    head = tok.encode("Look:")
    assert middle.ids == [0] + head + [IMAGE_TOKEN_ID] * 2 + [201, 21431, 126041, 16]
    assert middle.image_mask == [False] * (1 + len(head)) + [True, True] + [False] * 4


def test_prompt_without_image_tag_gets_one_and_two_are_refused(tok):
    assert build_prompt_ids(tok, "Free OCR.", 1).ids == [0, IMAGE_TOKEN_ID, 201, 21431, 126041, 16]
    with pytest.raises(PromptError):
        build_prompt_ids(tok, "<image><image>", 1)


def test_shipped_prompts():
    assert set(prompt_names()) >= {"document", "free-ocr", "ocr-layout", "parse-figure", "describe", "locate"}
    assert load_prompt("document").strip() == "<image>\n<|grounding|>Convert the document to markdown."
    with pytest.raises(PromptError):
        load_prompt("nope")


def test_special_markers_are_single_tokens(tok):
    assert [tok.token_id(t) for t in ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<td>", "</td>")] == \
        [128816, 128817, 128818, 128819, 128821, 128822]
    assert tok.decode([201, 128820, 1]) == "\n<|grounding|><｜end▁of▁sentence｜>"


def test_every_prompt_constant_names_a_shipped_prompt():
    from dsocr_cli import prompts

    names = [prompts.DOCUMENT, prompts.FREE_OCR, prompts.OCR_LAYOUT, prompts.PARSE_FIGURE, prompts.DESCRIBE,
             prompts.LOCATE]
    assert set(names) == set(prompts.prompt_names())
