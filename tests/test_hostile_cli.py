"""Bad files, bad options and hostile saved outputs at the command line: one line `dsocr: ...`,
the right exit status, nothing written outside -o (issue 15); the engine's limits on small GPUs,
long contexts and huge runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dsocr_cli.documents import format_pages
from dsocr_cli.engine.engine import MAX_BATCH, Engine, kv_budget
from dsocr_cli.errors import DsocrError
from dsocr_cli.generate import GenerationSettings, finish_reason
from dsocr_cli.preprocess import MODES
from dsocr_cli.prompts import load_prompt
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.requests import OcrRequest, settings_for
from dsocr_cli.runner import load_runner, pick_device
from dsocr_cli.tokenizer import Tokenizer
from test_convert import make_pdf


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsocr: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "page.png"
    Image.new("RGB", (200, 120), "white").save(path)
    return path


def test_bare_dsocr_prints_help_and_exits_0(dsocr):
    out = dsocr()
    assert out.code == 0 and "Usage" in out.stdout and "convert" in out.stdout


def test_ctrl_c_says_interrupted_and_exits_130(dsocr, monkeypatch, tmp_path):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("dsocr_cli.cli.convert.expand_inputs", interrupt)
    out = dsocr("convert", tmp_path, "-o", f"{tmp_path}/out/")
    assert out.code == 130 and one_line(out.stderr) == "dsocr: interrupted"


def test_a_prompt_file_that_is_not_utf8_is_one_line(dsocr, image, tmp_path):
    bad = tmp_path / "prompt.txt"
    bad.write_bytes(b"<image>\n\xff\xfe Free OCR.")
    out = dsocr("ocr", image, "--prompt-file", bad, "--model", tmp_path / "no-model")
    assert out.code == 2 and "is not UTF-8" in one_line(out.stderr)


@pytest.mark.parametrize("text, message", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (json.dumps({"version": 1, "pages": [{"page": 1, "raw": "x", "size": [10, 10], "problems": 5,
                                          "finish_reason": "error"}]}), None),
    (json.dumps({"version": 1, "pages": [{"page": "1", "raw": "x", "size": [10, 10]}]}), "wrong type"),
    (json.dumps({"version": 1, "pages": [{"page": True, "raw": "x", "size": [10, 10]}]}), "wrong type"),
    (json.dumps({"version": 1, "pages": [{"page": 0, "raw": "x", "size": [10, 10]}]}), "wrong type"),
    (json.dumps({"version": 1, "pages": [{"page": 10 ** 30, "raw": "x", "size": [10, 10]}]}), "out of range"),
    (json.dumps({"version": 1, "pages": [[1, "x"]]}), "lacks 'page'"),
    (json.dumps({"version": 1, "pages": []}), "no pages"),
    (json.dumps({"version": 1, "pages": [{"page": 1, "raw": "x", "size": {"w": 1, "h": 2}}]}), "wrong type"),
])
def test_hostile_layout_json_is_one_line_or_a_flagged_page(dsocr, tmp_path, text, message):
    layout = tmp_path / "doc.json"
    layout.write_text(text)
    out = dsocr("convert", "--from-raw", layout, "-o", f"{tmp_path}/out/")
    if message is None:   # a failed page with odd problems: rendered, flagged, exit 1
        assert out.code == 1 and "failed" in out.stderr and "Traceback" not in out.stderr
    else:
        assert out.code == 2 and message in one_line(out.stderr)


def test_a_finish_reason_with_a_path_cannot_write_outside_the_folder(dsocr, tmp_path):
    layout = tmp_path / "in" / "doc.json"
    layout.parent.mkdir()
    layout.write_text(json.dumps({"version": 1, "pages": [
        {"page": 1, "raw": "text", "size": [100, 100], "finish_reason": "../../../escaped"}]}))
    out = dsocr("convert", "--from-raw", layout, "-o", f"{tmp_path}/out/", "--keep-raw")
    assert "Traceback" not in out.stderr
    written = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.startswith("out/") or p == "in/doc.json" for p in written), written
    assert any(p.endswith("page-0001._escaped.txt") for p in written), written


def test_pages_that_select_no_saved_page_are_one_line(dsocr, tmp_path):
    pdf = make_pdf(tmp_path / "doc.pdf", 3)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "page-0001.txt").write_text("one")
    out = dsocr("convert", pdf, "--from-raw", raw, "--pages", "3", "-o", f"{tmp_path}/out/")
    assert out.code == 2 and "selects none of the saved pages" in one_line(out.stderr)


def test_json_from_a_raw_folder_takes_page_sizes_from_the_input_document(dsocr, tmp_path):
    pdf = make_pdf(tmp_path / "doc.pdf", 2)
    raw = tmp_path / "raw"
    raw.mkdir()
    for n in (1, 2):
        (raw / f"page-000{n}.txt").write_text(f"<|ref|>text<|/ref|><|det|>[[10, 10, 500, 100]]<|/det|>\nPage {n}")
    out = dsocr("convert", pdf, "--from-raw", raw, "--json", "-o", f"{tmp_path}/out/")
    assert out.code == 0, out.stderr
    layout = json.loads((tmp_path / "out" / "doc_layout.json").read_text())
    assert [p["size"] for p in layout["pages"]] == [[600, 800], [600, 800]]   # the PDF pages at 144 dpi


@pytest.mark.parametrize("spec", ["²", "1-²", "٣"])
def test_non_ascii_digits_in_pages_are_one_line(dsocr, tmp_path, spec):
    pdf = make_pdf(tmp_path / "doc.pdf", 1)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "page-0001.txt").write_text("one")
    out = dsocr("convert", pdf, "--from-raw", raw, "--pages", spec, "-o", f"{tmp_path}/out/")
    assert out.code == 2 and "--pages" in one_line(out.stderr)


@pytest.fixture(scope="module")
def broken_checkpoints(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with its weights cut short, its tokenizer cut short, its index garbled."""
    root = tmp_path_factory.mktemp("broken")
    made = {}
    for name, target, size in [("header", "model-00001-of-000001.safetensors", 100),
                               ("half", "model-00001-of-000001.safetensors", None),
                               ("tokenizer", "tokenizer.json", 5000),
                               ("index", "model.safetensors.index.json", 7)]:
        folder = shutil.copytree(tiny_checkpoint, root / name)
        path = folder / target
        data = path.read_bytes()
        path.write_bytes(data[:size if size is not None else len(data) // 2])
        made[name] = folder
    return made


@pytest.mark.parametrize("name, message", [
    ("header", "not a readable safetensors file"), ("half", "not a readable safetensors file"),
    ("tokenizer", "tokenizer.json cannot be read"), ("index", "is not a safetensors index"),
])
def test_a_damaged_checkpoint_is_one_line(dsocr, broken_checkpoints, image, name, message):
    out = dsocr("ocr", image, "--model", broken_checkpoints[name], "--device", "cpu", "--max-new-tokens", "2")
    assert out.code == 2 and message in one_line(out.stderr)


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "cuda:99"])
def test_devices_dsocr_cannot_run_on_are_refused(device):
    with pytest.raises(DsocrError, match="--device|no CUDA device"):
        pick_device(device)


def test_a_network_failure_fetching_the_model_is_a_runtime_failure(dsocr, image, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Name or service not known")
    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)  # config.json first (the model's kind)
    out = dsocr("ocr", image, "--model", "someone/some-model", "--device", "cpu")
    assert out.code == 1 and "could not fetch someone/some-model" in one_line(out.stderr)


def test_an_ngram_window_shorter_than_the_ngram_is_refused(dsocr, image, tiny_checkpoint):
    with pytest.raises(DsocrError, match="--ngram-window 90 is shorter than --ngram-size 100"):
        GenerationSettings(ngram_size=100, ngram_window=90)
    out = dsocr("ocr", image, "--model", tiny_checkpoint, "--device", "cpu", "--ngram-size", "100", "--ngram-window", "90")
    assert out.code == 2 and "--ngram-window" in one_line(out.stderr)
    GenerationSettings(ngram_size=0, ngram_window=1)          # the guard off: any window


def test_a_small_gpu_gets_a_small_but_valid_kv_budget_or_a_clear_error():
    gib = 1024 ** 3
    assert kv_budget(139 * gib, gib) == int(139 * gib * 0.85) - 6 * gib      # unchanged on a big GPU
    assert 4 * gib < kv_budget(12 * gib, gib) < 12 * gib
    assert kv_budget(3 * gib, gib // 2) > gib // 2
    with pytest.raises(DsocrError, match="too little for one page's KV cache"):
        kv_budget(gib // 4, gib // 2)


def test_generation_stops_at_the_models_context_as_length():
    settings = GenerationSettings(max_new_tokens=8192)
    assert finish_reason([5] * 100, 1, settings, False, context_left=100) == "length"
    assert finish_reason([5] * 99, 1, settings, False, context_left=100) is None


def test_engine_and_plain_path_stop_at_max_position_embeddings(tiny_checkpoint, tmp_path):
    tok = Tokenizer.bundled()
    image = Image.new("RGB", (300, 300), "white")
    request = [OcrRequest(image, load_prompt("free-ocr"), MODES["tiny"], key=0)]
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "short")
    config = json.loads((folder / "config.json").read_text())
    settings = settings_for(tok, max_new_tokens=400, ngram_size=0, loop_span=0)
    from dsocr_cli.checkpoint import load_model
    model = load_model(folder, torch.device("cpu"), torch.float32)
    prompt = next(PlainRunner(model, tok, settings_for(tok, max_new_tokens=1)).run(request)).prompt_tokens
    config["max_position_embeddings"] = config["language_config"]["max_position_embeddings"] = prompt + 12
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        model.lm_head.weight[1] = -1e4         # EOS never wins: the page runs to the context's end
    plain = next(PlainRunner(model, tok, settings).run(request))
    batched = next(Engine(model, tok, settings, max_batch=1).run(request))
    assert len(plain.token_ids) == 12 and plain.finish_reason == "length"
    assert batched.token_ids == plain.token_ids and batched.finish_reason == "length"


def test_a_huge_run_does_not_get_a_row_per_page(tiny_checkpoint):
    """It gets the rows the engine chooses from the cache and the prompts, as a run of unknown size."""
    runner = load_runner(str(tiny_checkpoint), device="cpu", pages=20_000, max_new_tokens=8)
    assert runner.max_batch <= MAX_BATCH and not runner.fixed_batch


def test_incomplete_pages_are_listed_as_ranges():
    assert format_pages([1, 2, 3, 7, 10, 11]) == "1-3,7,10-11"
    line = format_pages(list(range(1, 1238, 2)))
    assert len(line) < 80 and line.endswith("and 607 more")
    assert format_pages(list(range(1, 1238))) == "1-1237"
