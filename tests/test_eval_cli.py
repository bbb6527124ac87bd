import json
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from dsocr_cli.cli import app
from dsocr_cli.errors import DsocrError

TRUTH = "the cat sat on the mat"       # 5 distinct words; "thecatsatonthemat" after normalising (17)
READ = "the cat sat"                   # 3 of them; "thecatsat" (9): 8 insertions away


def run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failure(*args: str) -> str:
    result = CliRunner().invoke(app, ["eval", *args])
    assert isinstance(result.exception, DsocrError), result.output
    return str(result.exception)


@pytest.fixture
def pairs(tmp_path):
    """A folder with two pages and their ground truth (.txt and .md), plus an image without any."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name in ("a", "b", "orphan"):
        Image.new("RGB", (300, 400), "white").save(folder / f"{name}.png")
    (folder / "a.txt").write_text(TRUTH + "\n", encoding="utf-8")
    (folder / "b.md").write_text("Free OCR.", encoding="utf-8")
    return folder


def raw_outputs(folder, texts: dict[str, str]):
    folder.mkdir(parents=True)
    for stem, text in texts.items():
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return folder


def test_scores_from_raw_outputs_match_hand_computed_values(pairs, tmp_path):
    raw = raw_outputs(tmp_path / "raw", {
        "a": f"<|ref|>text<|/ref|><|det|>[[10, 10, 900, 80]]<|/det|>\n{READ}",  # grounding tags are not text
        "b": "Free OCR.",
    })
    out = run(str(pairs), "--modes", "tiny", "--from-raw", str(raw))
    [tiny] = out["modes"]
    a, b = tiny["items"]
    assert (a["precision"], a["edit_distance"]) == (pytest.approx(3 / 5), pytest.approx(8 / 17))
    assert (b["precision"], b["edit_distance"]) == (1.0, 0.0)
    assert b["text_tokens"] == 3 and b["vision_tokens"] == 73         # "Free OCR." is 3 tokens
    assert tiny["pages"] == 2                                          # the orphan image is skipped
    assert tiny["precision"] == pytest.approx((3 / 5 + 1) / 2)
    assert tiny["ratio"] == (a["text_tokens"] + 3) / 146


def test_several_modes_read_one_folder_each(pairs, tmp_path):
    raw = tmp_path / "raw"
    raw_outputs(raw / "tiny", {"a": READ, "b": ""})
    raw_outputs(raw / "base", {"a": TRUTH, "b": "Free OCR."})
    out = run(str(pairs), "--modes", "tiny,base", "--from-raw", str(raw))
    tiny, base = out["modes"]
    assert (tiny["mode"], tiny["vision_tokens"], base["mode"], base["vision_tokens"]) == ("tiny", 146, "base", 546)
    assert base["precision"] == 1.0 and base["edit_distance"] == 0.0
    assert tiny["items"][1]["precision"] == 0.0


def test_a_manifest_names_images_and_truths(pairs, tmp_path):
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(json.dumps({"image": "pairs/a.png", "text": TRUTH}) + "\n\n"
                        + json.dumps({"image": "pairs/b.png", "truth": "pairs/b.md"}) + "\n")
    raw = raw_outputs(tmp_path / "raw", {"a": READ, "b": "Free OCR."})
    items = run(str(manifest), "--modes", "small", "--from-raw", str(raw))["modes"][0]["items"]
    assert [i["precision"] for i in items] == [pytest.approx(3 / 5), 1.0]


def test_end_to_end_with_the_tiny_model_and_back_from_its_raw_outputs(pairs, tmp_path, tiny_checkpoint):
    model = ["--model", str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "4"]
    saved = tmp_path / "saved"
    live = run(str(pairs), "--modes", "tiny,small", *model, "--save-raw", str(saved))
    assert [m["mode"] for m in live["modes"]] == ["tiny", "small"]
    assert all(item["finish_reason"] in ("eos", "length", "repetition") for m in live["modes"] for item in m["items"])
    assert sorted(p.name for p in (saved / "small").iterdir()) == ["a.txt", "b.txt"]
    replay = run(str(pairs), "--modes", "tiny,small", "--from-raw", str(saved), "--model", str(tiny_checkpoint))
    for old, new in zip(live["modes"], replay["modes"]):
        assert [(i["precision"], i["edit_distance"], i["text_tokens"]) for i in old["items"]] == \
               [(i["precision"], i["edit_distance"], i["text_tokens"]) for i in new["items"]]


def test_table_and_plot(pairs, tmp_path):
    raw = raw_outputs(tmp_path / "raw", {"a": READ, "b": "Free OCR."})
    plot = tmp_path / "curve.png"
    result = CliRunner().invoke(app, ["eval", str(pairs), "--modes", "tiny", "--from-raw", str(raw), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.stdout and "80.0%" in result.stdout       # mean precision of 3/5 and 1
    assert "skipping" in result.stderr and "orphan.png" in result.stderr
    assert Image.open(plot).format == "PNG"


def test_plot_without_matplotlib_says_how_to_install_it(pairs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if it were not installed
    assert "pip install 'dsocr[plot]'" in failure(str(pairs), "--plot", str(tmp_path / "curve.png"))


@pytest.mark.parametrize("args, message", [
    (["--modes", "tiny,huge"], "unknown mode huge"),
    (["--modes", "tiny,small", "--from-raw", "{raw}"], "small is missing"),
    (["--modes", "tiny", "--from-raw", "{raw}", "--save-raw", "{raw}"], "with --from-raw there are none"),
])
def test_bad_options_are_clear_errors(pairs, tmp_path, args, message):
    raw = raw_outputs(tmp_path / "raw" / "tiny", {"a": READ, "b": ""}).parent
    assert message in failure(str(pairs), *[a.format(raw=raw) for a in args])


def test_missing_inputs_are_clear_errors(tmp_path):
    assert "no such folder or manifest" in failure(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    assert "has no image with ground truth" in failure(str(tmp_path / "empty"))
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"image": "x.png"}\n')
    assert "bad.jsonl:1: expected" in failure(str(manifest))
