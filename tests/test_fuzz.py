"""A fuzz corpus of bad inputs, generated here (no stored blobs): hostile model outputs, layout JSON,
PDFs, images, options and model folders. Each must give a clear one-line error or a flagged page:
never a traceback, never a write outside -o, never code execution; in a batch, the good document
is still converted. Test ids are CATEGORY-NAME: `python tests/fuzz_summary.py` tallies them.

Most cases run the pure functions or `convert --from-raw` in this process (no model); the batch and
the model-folder cases use the tiny checkpoint. The per-case time limit is far above what any case
takes now (milliseconds to a second) and far below what the old quadratic paths took (33-300 s)."""
from __future__ import annotations

import json
import re
import shutil
import struct
import time
import zlib
from pathlib import Path

import pymupdf
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from dsocr_cli.charts import parse_charts, to_csv, to_json
from dsocr_cli.figures import figure_markdown, read_figure
from dsocr_cli.grounding import strip_grounding
from dsocr_cli.layout import page_layout
from dsocr_cli.markdown import render_page
from dsocr_cli.pages import ParsedPage
from test_convert import make_pdf

CASE_SECONDS = 20
PAGE = (600, 800)
FIGURE_RAW = "<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\n<|ref|>text<|/ref|><|det|>[[1, 1, 500, 50]]<|/det|>\nHello"

# ---- hostile raw outputs: every parser and renderer on each --------------------------------------

BIG = "9" * 400
RAW = {
    "empty": "", "nul-bytes": "\x00" * 5000, "nul-in-tags": "<|ref|>te\x00xt<|/ref|><|det|>[[1,\x002,3,4]]<|/det|>\x00",
    "nested-ref": "<|ref|>" * 4_000, "nested-det": "<|det|>[[" * 4_000, "unterminated-ref": "<|ref|>text",
    "unterminated-det": "<|ref|>image<|/ref|><|det|>[[1, 2, 3", "three-numbers": "<|ref|>text<|/ref|><|det|>[[1,2,3]]<|/det|>x",
    "huge-coordinate": f"<|ref|>image<|/ref|><|det|>[[{BIG}, 1, 2, 3]]<|/det|>",
    "huge-negative": f"<|ref|>image<|/ref|><|det|>[[-{BIG}, -{BIG}, {BIG}, {BIG}]]<|/det|>",
    "out-of-grid": "<|ref|>image<|/ref|><|det|>[[0, 0, 19_999, 19_999]]<|/det|>",
    "zero-area-box": "<|ref|>image<|/ref|><|det|>[[5, 5, 5, 5]]<|/det|>",
    "many-boxes": "<|ref|>image<|/ref|><|det|>[" + "[1, 1, 900, 900], " * 4_000 + "[1, 1, 2, 2]]<|/det|>",
    "many-blocks": "<|ref|>text<|/ref|><|det|>[[1, 1, 2, 2]]<|/det|>\nx\n" * 2_000,
    "huge-label": "<|ref|>" + "x" * 40_000 + "<|/ref|><|det|>[[1,1,2,2]]<|/det|>",
    "label-markup": "<|ref|><script>alert(1)</script>\n<|/ref|><|det|>[[1,1,2,2]]<|/det|>",
    "stray-grounding": "<|grounding|>" * 1000 + "<|/det|>" * 1000,
    "rtl-override": "\u202eabc\u202d def \u200f\u061c" * 2000,
    "combining-marks": "a" + "\u0301\u0302\u0303" * 6_000,
    "emoji-zwj": "\U0001F468\u200d\U0001F469\u200d\U0001F467" * 5000,
    "lone-surrogate-escape": "\\ud800 \\udfff", "crlf-mix": "a\r\nb\rc\n\r\n" * 5000,
    "unclosed-inline-math": "\\(" * 10_000, "unclosed-display-math": "\\[" * 10_000,
    "line-breaks-in-math": "\\[" + "a \\\\[2pt] " * 2_000, "dollars": "$" * 10_000,
    "backslashes": "\\" * 20_000, "backticks": "`" * 10_000 + " ``x`" * 5000,
    "unclosed-fence": "```python\n" + "x = 1\n" * 2_000, "tilde-fences": "~~~~\n" * 4_000,
    "spans-in-total": "<table>" + '<tr><td rowspan="1000" colspan="1000">x</td>' * 50 + "</table>",
    "span-digits": "<table><tr><td colspan='1" + "0" * 5000 + "' rowspan=-5>x</td></tr></table>",
    "nested-tables": "<table><tr><td>" * 5000, "unfinished-td": "<table><td>" + "<td " * 6_000,
    "unclosed-comment": "<table><!--" + "x" * 10_000, "bad-entities": "<table><tr><td>&#x110000;&#0;&#xd800;&bogus;</td></tr></table>",
    "big-table": "<table>" + ("<tr>" + "<td>1</td>" * 100 + "</tr>") * 100 + "</table>",
    "pipe-table-garbage": "|" * 10_000 + "\n" + "|---" * 4_000,
    "javascript-links": "[x](javascript:alert(1)) [y](data:text/html,<script>1</script>) <javascript:alert(2)>",
    "remote-images": "![a](https://tracker.example/p.png) ![b](file:///etc/passwd) ![c](//x.example/y.gif)",
    "raw-html": "<script>alert(1)</script><iframe src=x></iframe><img src=x onerror=alert(1)><style>*{}</style>",
    "headings": "#" * 10_000 + " title", "long-line": "a" * 200_000,
    "chart-spaces": "a" + " " * 12_000 + "b\n-" + " " * 12_000 + "1\nx: 1" + " " * 12_000 + "y",
    "chart-bigint": "<table><tr><th>a</th><th>b</th></tr><tr><td>x</td><td>" + "9" * 5000 + "</td></tr></table>",
    "chart-key-values": "label: 1\n" * 4_000, "chart-bigfloat": "a: 1e999999\nb: " + BIG + "." + BIG,
    "smiles-huge": "<smiles>" + "C" * 20_000 + "</smiles>", "smiles-rings": "<smiles>" + "C1CC1" * 500 + "</smiles>",
    "smiles-word": "CNN", "smiles-labels": "SMILES: " * 4_000, "smiles-fences": "```" * 4_000,
    "smiles-bold": "**" * 10_000 + "**C**", "smiles-prose": "the molecule " * 4_000,
    "full-page-figure-nul": "\x00" + FIGURE_RAW,
}


@pytest.mark.parametrize("raw", RAW.values(), ids=[f"raw-{name}" for name in RAW])
def test_hostile_raw_output(raw):
    start = time.perf_counter()
    page = Image.new("RGB", PAGE, "white")
    rendered = render_page(raw, 1, PAGE, page, finish_reason="length")
    assert isinstance(rendered.markdown, str) and len(rendered.figures) <= 500
    if len(rendered.markdown) < 200_000:   # what a viewer that passes raw HTML would show
        html = MarkdownIt("commonmark").render(rendered.markdown).lower()
        assert not any(bad in html for bad in ('href="javascript', 'href="data:', "<script", "<iframe"))
        assert re.search(r"<[a-z][^<>]*\son\w+=", html) is None
        assert html.count("<img") == html.count('src="p1_fig')
    page_layout(ParsedPage(1, raw, "eos", PAGE), rendered.problems)
    strip_grounding(raw)
    for chart in parse_charts(raw):
        to_csv(chart), to_json(chart)
    figure_markdown(read_figure(raw))
    assert time.perf_counter() - start < CASE_SECONDS, "over time"


# ---- CLI cases: in this process, each in its own folder ----------------------------------------

def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def check_clean(out, root: Path, before: set[str], allowed_codes=(0, 1, 2)):
    """No traceback, a `dsocr:` line when it failed, nothing new outside root/out."""
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, "Traceback: " + out.stderr[-2000:]
    assert out.code in allowed_codes, (out.code, out.stderr[-500:])
    if out.code == 2:   # ours: one `dsocr:` line; Typer's own usage errors: its Usage/Error box
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        ours = len(lines) == 1 and lines[0].startswith("dsocr: ")
        assert ours or (lines[0].startswith("Usage:") and "Error" in out.stderr), out.stderr[-1000:]
    new = files_under(root) - before
    assert all(p.startswith("out/") for p in new), f"written outside -o: {sorted(new)[:5]}"


def run_case(dsocr, root: Path, *args, allowed_codes=(0, 1, 2)):
    before = files_under(root)
    start = time.perf_counter()
    out = dsocr(*args)
    assert time.perf_counter() - start < CASE_SECONDS, "over time"
    check_clean(out, root, before, allowed_codes)
    return out


def layout(pages, **extra) -> str:
    return json.dumps({"version": 1, "source": "doc.pdf", "pages": pages, **extra})


def page(**fields) -> dict:
    return {"page": 1, "raw": "text", "size": [100, 100], "finish_reason": "eos", **fields}


LAYOUTS = {
    "not-json": "{", "not-utf8": b"\xff\xfe{}", "empty": "", "list": "[]", "null": "null", "string": '"x"',
    "no-version": json.dumps({"pages": []}), "string-version": json.dumps({"version": "1", "pages": []}),
    "future-version": json.dumps({"version": 99, "pages": []}), "pages-dict": json.dumps({"version": 1, "pages": {}}),
    "no-pages": layout([]), "entry-string": layout(["x"]), "entry-null": layout([None]),
    "missing-raw": layout([{"page": 1, "size": [1, 1]}]), "raw-int": layout([page(raw=5)]),
    "zero-size": layout([page(size=[0, 0])]), "negative-size": layout([page(size=[-1, 5])]),
    "huge-size": layout([page(size=[10 ** 12, 1])]), "float-size": layout([page(size=[1.5, 2])]),
    "three-sides": layout([page(size=[1, 2, 3])]), "size-string": layout([page(size="ab")]),
    "reason-int": layout([page(finish_reason=5)]), "reason-path": layout([page(finish_reason="../../../../x")]),
    "reason-abs": layout([page(finish_reason="/tmp/evil")]), "reason-backslash": layout([page(finish_reason="..\\..\\x")]),
    "duplicate-pages": layout([page(), page()]), "page-huge": layout([page(page=10 ** 40)]),
    "page-negative": layout([page(page=-3)]), "page-bool": layout([page(page=True)]),
    "deep-nesting": "[" * 100_000 + "]" * 100_000, "deep-in-page": layout([page(problems=[[[[[[[]]]]]]] * 3)]),
    "problems-int": layout([page(finish_reason="error", problems=5)]),
    "source-dotdot": layout([page()], source=".."), "source-path": layout([page()], source="../../../etc/passwd"),
    "source-abs": layout([page()], source="/etc/passwd"), "source-root": layout([page()], source="/"),
    "source-int": layout([page()], source=5), "nul-raw": layout([page(raw="\x00<|ref|>\x00")]),
    "hostile-raw": layout([page(raw=RAW["unclosed-inline-math"] + RAW["spans-in-total"] + RAW["huge-coordinate"])]),
}


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=[f"layout-{name}" for name in LAYOUTS])
def test_hostile_layout_json(dsocr, tmp_path, text):
    saved = tmp_path / "in" / "doc.json"
    saved.parent.mkdir()
    saved.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    run_case(dsocr, tmp_path, "convert", "--from-raw", saved, "-o", f"{tmp_path}/out/", "--keep-raw", "--json")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds almost nothing (a bomb, or a 0 x 0 image)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def good_pdf(tmp: Path, pages: int = 2) -> bytes:
    return make_pdf(tmp / "good-source.pdf", pages).read_bytes()


def encrypted_pdf(tmp: Path) -> bytes:
    good_pdf(tmp)
    doc = pymupdf.open(tmp / "good-source.pdf")
    doc.save(tmp / "enc.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    return (tmp / "enc.pdf").read_bytes()


def huge_page_pdf(tmp: Path) -> bytes:
    doc = pymupdf.open()
    doc.new_page(width=14_400, height=14_400)
    doc.save(tmp / "huge.pdf")
    return (tmp / "huge.pdf").read_bytes()


def png_bytes(size=(64, 48), fmt="PNG", mode="RGB") -> bytes:
    import io
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, fmt)
    return buffer.getvalue()


ZERO_PAGE_PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
                 b"trailer<</Root 1 0 R>>\n%%EOF\n")
FILES = {  # name -> (file name, bytes maker)
    "pdf-truncated": ("doc.pdf", lambda t: good_pdf(t)[:len(good_pdf(t)) // 2]),
    "pdf-header-only": ("doc.pdf", lambda t: b"%PDF-1.7\n"),
    "pdf-encrypted": ("doc.pdf", encrypted_pdf),
    "pdf-zero-pages": ("doc.pdf", lambda t: ZERO_PAGE_PDF),
    "pdf-garbage": ("doc.pdf", lambda t: bytes(range(256)) * 64),
    "pdf-empty": ("doc.pdf", lambda t: b""),
    "pdf-is-png": ("doc.pdf", lambda t: png_bytes()),
    "pdf-huge-page": ("doc.pdf", huge_page_pdf),
    "pdf-garbage-after-header": ("doc.pdf", lambda t: b"%PDF-1.5\n" + bytes(range(256)) * 32),
    "pdf-nul-bytes": ("doc.pdf", lambda t: b"\x00" * 4096),
    "image-truncated-png": ("doc.png", lambda t: png_bytes((400, 300))[:200]),
    "image-zero-by-zero": ("doc.png", lambda t: png_header(0, 0)),
    "image-bomb-header": ("doc.png", lambda t: png_header(100_000, 100_000)),
    "image-thin-strip": ("doc.png", lambda t: png_bytes((1, 30_000))),
    "image-jpeg-named-png": ("doc.png", lambda t: png_bytes(fmt="JPEG")),
    "image-png-named-jpg": ("doc.jpg", lambda t: png_bytes()),
    "image-text-named-png": ("doc.png", lambda t: b"hello, I am not an image\n" * 10),
    "image-empty": ("doc.png", lambda t: b""),
    "image-cmyk-jpeg": ("doc.jpg", lambda t: png_bytes(fmt="JPEG", mode="CMYK")),
    "image-16-bit": ("doc.png", lambda t: png_bytes(mode="I;16")),
    "image-one-pixel": ("doc.png", lambda t: png_bytes((1, 1))),
    "image-gif-named-tiff": ("doc.tiff", lambda t: png_bytes(fmt="GIF", mode="P")),
}


@pytest.mark.parametrize("name", FILES, ids=list(FILES))
def test_bad_documents_through_saved_output(dsocr, tmp_path, name):
    """The document is opened, counted and its pages rendered (a full-page figure is cropped)."""
    file_name, make = FILES[name]
    document = tmp_path / "in" / file_name
    document.parent.mkdir()
    document.write_bytes(make(tmp_path))
    raw = tmp_path / "in" / "raw"
    raw.mkdir()
    (raw / "page-0001.txt").write_text(FIGURE_RAW)
    run_case(dsocr, tmp_path, "convert", document, "--from-raw", raw, "-o", f"{tmp_path}/out/", "--json", "--annotate")


OPTIONS = {
    "pages-zero": ["--pages", "0"], "pages-word": ["--pages", "abc"], "pages-backwards": ["--pages", "5-2"],
    "pages-dash": ["--pages", "-"], "pages-commas": ["--pages", ",,"], "pages-double-dash": ["--pages", "1--2"],
    "pages-superscript": ["--pages", "²"], "pages-huge": ["--pages", "1-" + "9" * 5000],
    "dpi-zero": ["--dpi", "0"], "dpi-negative": ["--dpi", "-5"], "dpi-huge": ["--dpi", "100000"], "dpi-word": ["--dpi", "x"],
    "mode-bogus": ["--mode", "huge"], "gpus-word": ["--gpus", "x"], "gpus-twice": ["--gpus", "0,0"],
    "gpus-missing": ["--gpus", "99"], "batch-zero": ["--batch", "0"], "batch-negative": ["--batch", "-1"],
    "max-new-tokens-zero": ["--max-new-tokens", "0"], "ngram-negative": ["--ngram-size", "-1"],
    "ngram-window-short": ["--ngram-size", "100", "--ngram-window", "90"], "tables-bogus": ["--tables", "latex"],
    "math-bogus": ["--math-delimiters", "brackets"], "device-meta": ["--device", "meta"], "dtype-bogus": ["--dtype", "fp8"],
    "from-raw-missing": ["--from-raw", "/nonexistent/raw"], "prompt-file-missing": ["--prompt-file", "/nonexistent"],
    "shard-bogus": ["--shard", "3/2"], "unknown-option": ["--frobnicate"],
}


@pytest.mark.parametrize("extra", OPTIONS.values(), ids=[f"option-{name}" for name in OPTIONS])
def test_bad_options(dsocr, tmp_path, extra):
    document = make_pdf(tmp_path / "in" / "doc.pdf", 1) if (tmp_path / "in").mkdir() is None else None
    run_case(dsocr, tmp_path, "convert", document, "-o", f"{tmp_path}/out/", "--model", tmp_path / "no-model", *extra,
             allowed_codes=(1, 2))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


MODEL_FOLDERS = {  # name -> change made to a copy of the tiny checkpoint
    "missing-config": lambda f: (f / "config.json").unlink(),
    "missing-tokenizer": lambda f: (f / "tokenizer.json").unlink(),
    "missing-weights": lambda f: next(f.glob("*.safetensors")).unlink(),
    "config-garbage": lambda f: (f / "config.json").write_bytes(b"\xff{garbage"),
    "config-list": lambda f: (f / "config.json").write_text("[]"),
    "config-wrong-sizes": lambda f: (f / "config.json").write_text(json.dumps(
        {**_config(f), "hidden_size": 96, "language_config": {**_config(f)["language_config"], "hidden_size": 96}})),
    "config-string-layers": lambda f: (f / "config.json").write_text(json.dumps(
        {**_config(f), "num_hidden_layers": "two", "language_config": {**_config(f)["language_config"], "num_hidden_layers": "two"}})),
    "index-garbage": lambda f: (f / "model.safetensors.index.json").write_text("{"),
    "index-escapes": lambda f: (f / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"x": "../../outside.safetensors"}})),
    "weights-empty": lambda f: next(f.glob("*.safetensors")).write_bytes(b""),
    "weights-truncated": lambda f: (lambda p: p.write_bytes(p.read_bytes()[:4096]))(next(f.glob("*.safetensors"))),
    "tokenizer-truncated": lambda f: (f / "tokenizer.json").write_bytes((f / "tokenizer.json").read_bytes()[:3000]),
    "empty-folder": lambda f: [p.unlink() for p in f.iterdir()],
}


@pytest.mark.parametrize("name", MODEL_FOLDERS, ids=[f"model-{name}" for name in MODEL_FOLDERS])
def test_bad_model_folders(dsocr, tmp_path, tiny_checkpoint, name):
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    MODEL_FOLDERS[name](folder)
    image = tmp_path / "in" / "page.png"
    image.parent.mkdir()
    Image.new("RGB", (120, 80), "white").save(image)
    run_case(dsocr, tmp_path, "ocr", image, "--model", folder, "--device", "cpu", "--max-new-tokens", "1",
             "-o", f"{tmp_path}/out/", allowed_codes=(1, 2))


def test_batch_a_folder_of_bad_files_converts_the_good_one(tmp_path, tiny_checkpoint, dsocr):
    """Every bad document and image in one folder with one good PDF, through the tiny model."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (file_name, make) in FILES.items():
        (folder / f"{name}{Path(file_name).suffix}").write_bytes(make(tmp_path))
    make_pdf(folder / "good.pdf", 1)
    out = run_case(dsocr, tmp_path, "convert", folder, "-o", f"{tmp_path}/out/", "--model", tiny_checkpoint,
                   "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "2", allowed_codes=(1,))
    assert (tmp_path / "out" / "good.md").is_file()
    assert "pdf-truncated" in out.stderr and "image-bomb-header" in out.stderr
