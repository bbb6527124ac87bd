"""The per-image commands end to end with the tiny random model: its output is noise, so what is
checked is the plumbing (one engine run, names, records, exit codes, failures kept per image)."""
from __future__ import annotations

import json

import pytest
from PIL import Image


FAST = ("--device", "cpu", "--mode", "tiny", "--max-new-tokens", "8")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("RGB", (320, 200), "white").save(tmp_path / "imgs" / "a.png")
    Image.new("RGB", (200, 320), "gray").save(tmp_path / "imgs" / "sub" / "b.jpg")
    return tmp_path / "imgs"


def test_ocr_folder_and_a_missing_image_in_one_run(dsocr, tiny_checkpoint, folder):
    missing = folder.parent / "missing.png"
    out = dsocr("ocr", folder, missing, "--json", "--model", tiny_checkpoint, *FAST)
    assert out.code == 1 and f"dsocr: {missing}: no such file or folder" in out.stderr.splitlines()
    first, second, failed = map(json.loads, out.stdout.splitlines())
    assert (first["image"], second["image"]) == (str(folder / "a.png"), str(folder / "sub" / "b.jpg"))
    assert first["size"] == [320, 200] and second["size"] == [200, 320]
    assert 1 <= len(first["token_ids"]) <= 8 and first["finish_reason"] in ("eos", "length", "repetition")
    assert failed == {"image": str(missing), "error": "no such file or folder"}


@pytest.mark.parametrize("command", [("parse-chart", "--json"), ("parse-chem", "--json"), ("describe", "--json"),
                                     ("locate", "Total")])
def test_each_command_runs_the_model_and_answers_per_image(dsocr, tiny_checkpoint, folder, command):
    name, *rest = command
    out = dsocr(name, folder / "a.png", *rest, "--model", tiny_checkpoint, *FAST)
    assert out.code in (0, 1) and "Traceback" not in out.stderr
    record = json.loads(out.stdout)
    assert record["image"] == str(folder / "a.png") and "finish_reason" in record
    assert (out.code == 1) == ("error" in record or record.get("boxes") == [])
    if name == "locate":
        assert record["text"] == "Total" and record["size"] == [320, 200]


def test_model_errors_are_usage_errors(dsocr, folder, tmp_path):
    out = dsocr("describe", folder, "--model", tmp_path / "nowhere", *FAST)
    assert out.code == 2 and out.stderr.startswith("dsocr: error:") and len(out.stderr.splitlines()) == 1
