import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dsocr_cli import fonts
from dsocr_cli.cli import app
from dsocr_cli.errors import DsocrError
from dsocr_cli.tokenizer import Tokenizer

SAMPLE = Path(__file__).parent.parent / "fixtures" / "compress" / "sample.md"


def run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["compress", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failure(*args: str) -> str:
    result = CliRunner().invoke(app, ["compress", *args])
    assert isinstance(result.exception, DsocrError), result.output
    return str(result.exception)


def test_counts_use_the_checkpoint_tokenizer(tmp_path, tiny_checkpoint):
    # "\nFree OCR." encodes to 201, 21431, 126041, 16 with the released tokenizer (ARCHITECTURE.md
    # section 7); without the newline that is 3 tokens, on one page of 73 vision tokens in tiny mode.
    note = tmp_path / "note.txt"
    note.write_text("Free OCR.\n", encoding="utf-8")
    out = run(str(note), "--model", str(tiny_checkpoint), "--mode", "tiny")
    assert out["mode"] == "tiny"
    assert out["pages"] == [{"image": None, "text_tokens": 3, "vision_tokens": 73, "ratio": 3 / 73}]
    assert out["total"] == {"text_tokens": 3, "vision_tokens": 73, "ratio": 3 / 73}


def test_pages_are_written_with_their_text_and_totals_add_up(tmp_path):
    out = run(str(SAMPLE), "-o", str(tmp_path / "pages"), "--font-size", "26")
    pages = out["pages"]
    assert len(pages) >= 2
    tokenizer = Tokenizer.bundled()
    for page in pages:
        image = Path(page["image"])
        assert Image.open(image).size == (1190, 1684)
        assert page["vision_tokens"] == 111
        assert page["text_tokens"] == len(tokenizer.encode(image.with_suffix(".txt").read_text(encoding="utf-8").strip()))
        assert page["ratio"] == page["text_tokens"] / 111
    total = out["total"]
    assert total["text_tokens"] == sum(p["text_tokens"] for p in pages)
    assert total["vision_tokens"] == 111 * len(pages)


def test_without_system_fonts_the_builtin_font_is_used_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "installed_fonts", lambda: {})
    result = CliRunner().invoke(app, ["compress", str(SAMPLE), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Pillow's built-in" in result.stderr
    assert (tmp_path / "page-001.png").is_file()


def test_decode_reads_the_pages_back(tmp_path, tiny_checkpoint):
    note = tmp_path / "note.md"
    note.write_text("# Notes\n\nA short note to read back.\n", encoding="utf-8")
    out = run(str(note), "--decode", "--model", str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "4",
              "--mode", "tiny")
    page = out["pages"][0]
    assert page["finish_reason"] in ("eos", "length", "repetition")
    assert 0.0 <= page["precision"] <= 1.0 and 0.0 <= page["edit_distance"] <= 1.0
    assert out["total"]["precision"] == page["precision"]


def test_history_reports_the_budget_at_each_step(tmp_path):
    chat = tmp_path / "chat.jsonl"
    paragraphs = SAMPLE.read_text(encoding="utf-8").split("\n\n")
    chat.write_text("\n".join(json.dumps({"role": "user" if i % 2 == 0 else "assistant",
                                          "content": paragraphs[i % len(paragraphs)]}) for i in range(12)))
    out = run("--history", str(chat), "--keep-text", "2", "--keep-small", "4", "-o", str(tmp_path / "memory"))
    steps = out["steps"]
    assert [[(t["form"], t["turns"]) for t in s["tiers"]] for s in steps] == [
        [("text", [1, 12])],
        [("small", [1, 10]), ("text", [11, 12])],
        [("tiny", [1, 6]), ("small", [7, 10]), ("text", [11, 12])],
    ]
    for before, step in zip(steps, steps[1:]):
        assert step["tokens"] == sum(t["tokens"] for t in step["tiers"])
        assert step["saved"] == before["tokens"] - step["tokens"]
        assert step["saved_total"] == steps[0]["tokens"] - step["tokens"]
    small = steps[1]["tiers"][0]
    assert small["tokens"] == 111 * small["pages"] and small["tokens"] < small["text_tokens"]
    assert all(Path(image).is_file() for image in small["images"])


@pytest.mark.parametrize("args, message", [
    ([], "give a text file to render, or --history"),
    (["missing.txt"], "no such file: missing.txt"),
    ([str(SAMPLE), "--font", "no-such-font.ttf"], "no such font file"),
    (["--history", str(SAMPLE), "--decode"], "does not apply to --history"),
    (["--history", str(SAMPLE)], "sample.md:1: not JSON"),
])
def test_bad_input_is_one_clear_error(args, message):
    assert message in failure(*args)


def test_empty_text_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "has no text to render" in failure(str(empty))


def test_the_command_line_exits_2_with_one_line():
    done = subprocess.run([sys.executable, "-m", "dsocr_cli", "compress", "missing.txt"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "dsocr: error: no such file: missing.txt\n"
