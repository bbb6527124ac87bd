"""`dsocr convert`: the pipeline with a scripted runner, --from-raw against golden files, and the real
command line end to end with the tiny model (its text is noise; the plumbing is what is checked)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from dsocr_cli import convert as pipeline
from dsocr_cli import saved as saved_output
from dsocr_cli.documents import expand_inputs
from dsocr_cli.generate import GenerationSettings
from dsocr_cli.preprocess import MODES
from dsocr_cli.requests import PENDING, OcrResult
from golden import RAW, assert_golden, raw_fixture
from conftest import run_dsocr

PAGE_PT = (300, 400)  # PDF points: 600 x 800 px at 144 dpi


def make_pdf(path: Path, pages: int) -> Path:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=PAGE_PT[0], height=PAGE_PT[1])
        page.insert_text((30, 40), f"Page {n} heading", fontsize=16)
        page.draw_rect(pymupdf.Rect(45, 60, 255, 180), color=(0, 0, 0), fill=(0.2, 0.5, 0.8))
    doc.save(path)
    return path


class ScriptedRunner:
    """The Runner protocol over canned outputs: (page, attempt) -> (raw, finish_reason) or an error.
    It takes requests as a batched engine does, all it can get (up to PENDING), then answers them out
    of order; `live` says whether it may be given PENDING."""
    tokenizer, engines, devices, pages_done = None, 1, [], []  # the rest of the Runner protocol

    def __init__(self, script: dict, live: bool = False):
        self.script, self.settings, self.runs, self.live_requests = script, GenerationSettings(), [], live

    def run(self, requests, settings=None, on_token=None):
        requests, taken = iter(requests), []
        self.runs.append((settings, taken))
        while True:
            held, ended = [], True
            for request in requests:
                if request is PENDING:
                    assert self.live_requests
                    ended = False
                    break
                held.append(request)
            taken += [(r.key, r.retry) for r in held]
            for request in reversed(held):
                yield self.answer(request)
            if ended:
                return

    def answer(self, request):
        answer = self.script[request.key[1]][request.retry]
        if isinstance(answer, Exception):
            return OcrResult(request.key, "", [], "error", 0, 0, error=str(answer))
        raw, reason = answer
        return OcrResult(request.key, raw, [1, 2], reason, 10, 5, page_size=request.image().size)


def options(**kw):
    return pipeline.ConvertOptions(mode=MODES["base"], prompt="<image>\nConvert.", **kw)


def plan(tmp_path, names_pages, output, **kw):
    paths = [make_pdf(tmp_path / name, pages) for name, pages in names_pages]
    opts = options(**kw)
    jobs, reports = pipeline.plan_jobs(expand_inputs([str(p) for p in paths], None), output, opts)
    return jobs, reports, opts


@pytest.mark.parametrize("live", [True, False])
def test_pages_are_retried_once_with_a_stronger_guard_and_kept_when_they_still_fail(tmp_path, live):
    jobs, reports, opts = plan(tmp_path, [("report.pdf", 4)], str(tmp_path / "out.md"), layout_json=True)
    runner = ScriptedRunner({
        1: [(raw_fixture("figures"), "eos")],
        2: [("looping " * 5, "repetition"), (raw_fixture("tables"), "eos")],   # fixed by the retry
        3: [(raw_fixture("truncated"), "length"), (raw_fixture("truncated"), "length")],  # still cut
        4: [ValueError("PageError: cannot render page 4")],
    }, live)
    [report] = list(pipeline.convert(jobs, runner, opts))
    first = [((0, n), False) for n in (1, 2, 3, 4)]
    retries = [((0, 2), True), ((0, 3), True)]
    if live:  # the retries join the run that is still going
        [(settings, taken)] = runner.runs
        assert taken[:4] == first and sorted(taken[4:]) == retries
    else:
        [(settings, taken), (again, retaken)] = runner.runs
        assert taken == first and sorted(retaken) == retries and again == settings
    assert settings == runner.settings
    assert report.incomplete == [3] and report.failed == ["page 4: PageError: cannot render page 4"]
    assert not report.ok and report.pages == 4
    markdown = (tmp_path / "out.md").read_text()
    assert markdown.index("Field Notes") < markdown.index("| Run |") < markdown.index("page 3 incomplete (length)")
    assert markdown.rstrip().endswith("<!-- dsocr: page 4 could not be converted: PageError: cannot render page 4 -->")
    assert "looping" not in markdown
    assert sorted(os.listdir(tmp_path / "out_images")) == ["p1_fig1.png", "p1_fig2.png", "p1_fig3.png", "p1_fig4.png"]
    with Image.open(tmp_path / "out_images" / "p1_fig1.png") as fig:   # box [150,100,850,400] of 600 x 800
        assert fig.size == (420, 240)
    layout = json.loads((tmp_path / "out_layout.json").read_text())
    pages = layout["pages"]
    assert [p["page"] for p in pages] == [1, 2, 3, 4] and layout["source"] == "report.pdf"
    assert [p["flags"] for p in pages] == [[], ["retried"], ["incomplete", "retried"], ["failed"]]
    assert pages[0]["size"] == [600, 800] and pages[3]["finish_reason"] == "error"


def test_documents_are_written_as_soon_as_their_last_page_is_in(tmp_path):
    jobs, _, opts = plan(tmp_path, [("a.pdf", 1), ("b.pdf", 2)], str(tmp_path / "out") + "/")
    runner = ScriptedRunner({1: [("# One", "eos")], 2: [("# Two", "eos")]})
    seen = []
    for report in pipeline.convert(jobs, runner, opts, on_page=lambda job, page: seen.append((job.source.path.name, page.number))):
        assert report.ok and report.target.markdown.is_file()
        seen.append(report.source.path.name)
    assert seen[-1] in ("a.pdf", "b.pdf") and len(runner.runs) == 1
    assert (tmp_path / "out" / "b.md").read_text() == "# One\n\n# Two\n"


def test_plan_reports_unreadable_inputs_and_empty_selections(tmp_path):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7 this is not a pdf")
    make_pdf(tmp_path / "short.pdf", 2)
    sources = expand_inputs([str(bad), str(tmp_path / "short.pdf"), str(tmp_path / "missing.pdf")], None)
    jobs, reports = pipeline.plan_jobs(sources, str(tmp_path / "o") + "/", options(pages="5-"))
    assert not jobs
    reasons = {r.source.path.name: r.error for r in reports}
    assert reasons["broken.pdf"].startswith("cannot open this PDF")
    assert reasons["short.pdf"] == "--pages 5- selects none of its 2 pages"
    assert reasons["missing.pdf"] == "no such file or folder"


def test_saved_outputs_round_trip_through_the_layout_json(tmp_path):
    jobs, _, opts = plan(tmp_path, [("report.pdf", 2)], str(tmp_path / "first.md"), layout_json=True)
    runner = ScriptedRunner({1: [(raw_fixture("figures"), "eos")], 2: [(raw_fixture("math"), "eos")]})
    list(pipeline.convert(jobs, runner, opts))
    recorded, saved = saved_output.read_saved(tmp_path / "first_layout.json")
    assert recorded == "report.pdf" and sorted(saved) == [1, 2] and saved[1].size == (600, 800)
    source = saved_output.source_for(recorded)
    target = pipeline.plan_outputs([source], str(tmp_path / "again.md"))[0]
    job = saved_output.saved_job(saved, source, target, None, None)
    [report] = list(pipeline.convert([job], None, opts))
    assert (tmp_path / "again.md").read_text() == (tmp_path / "first.md").read_text().replace("first_images/", "again_images/")
    assert report.problems and all("not cropped" in p for p in report.problems)


def test_saved_raw_folders_need_page_numbers(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "page-0002.txt").write_text("two")
    (folder / "page-0010.repetition.md").write_text("ten")
    _, saved = saved_output.read_saved(folder)
    assert {n: (p.raw, p.finish_reason) for n, p in saved.items()} == {2: ("two", "eos"), 10: ("ten", "repetition")}
    (folder / "notes.txt").write_text("?")
    with pytest.raises(saved_output.DsocrError, match="no page number"):
        saved_output.read_saved(folder)


# ---- the command line -----------------------------------------------------------------------

def test_from_raw_renders_a_document_with_figures_against_golden_files(tmp_path):
    pdf = make_pdf(tmp_path / "field notes.pdf", 3)
    raw = tmp_path / "raw"
    raw.mkdir()
    for n, name in enumerate(["figures", "tables", "truncated"], 1):
        (raw / (f"page-{n:04d}.length.txt" if n == 3 else f"page-{n:04d}.txt")).write_text(raw_fixture(name))
    out = tmp_path / "out" / "notes.md"
    result = run_dsocr("convert", pdf, "--from-raw", raw, "-o", out, "--json", "--page-separator",
                       "<!-- page {page} -->", "--annotate")
    assert result.returncode == 1, result.stderr  # page 3 is incomplete
    assert "page 3 incomplete" in result.stderr and result.stdout == ""
    assert_golden("convert-notes.md", out.read_text())
    layout = json.loads((tmp_path / "out" / "notes_layout.json").read_text())
    assert_golden("convert-notes.layout.json", json.dumps(layout, indent=1, ensure_ascii=False) + "\n")
    assert len(os.listdir(tmp_path / "out" / "notes_images")) == 4
    assert pymupdf.open(tmp_path / "out" / "notes_layout.pdf").page_count == 3


def test_from_raw_layout_json_alone_re_renders_with_other_options(tmp_path):
    layout = tmp_path / "notes_layout.json"
    doc = {"version": 1, "source": "notes.pdf", "meta": {}, "pages": [
        {"page": 1, "size": [600, 800], "finish_reason": "eos", "raw": raw_fixture("tables")}]}
    layout.write_text(json.dumps(doc))
    result = run_dsocr("convert", "--from-raw", layout, "-o", "-", "--tables", "html")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Quarterly Fleet Report\n") and "<table>" in result.stdout
    missing_o = run_dsocr("convert", "--from-raw", layout)
    assert missing_o.returncode == 2 and missing_o.stderr.count("\n") == 1 and "needs -o" in missing_o.stderr


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A folder with two PDFs (one in a subfolder), an image and a corrupt PDF."""
    root = tmp_path_factory.mktemp("batch") / "in"
    (root / "sub").mkdir(parents=True)
    make_pdf(root / "pdf_notes.pdf", 3)
    make_pdf(root / "sub" / "report.pdf", 1)
    Image.new("RGB", (300, 200), "white").save(root / "scan.png")
    (root / "sub" / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    return root


TINY = ("--mode", "tiny", "--max-new-tokens", "6", "--device", "cpu")


def test_convert_a_folder_with_the_tiny_model(dsocr, batch, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    args = ("convert", batch, "-o", f"{out}/", "--model", tiny_checkpoint, *TINY, "--pages", "1,3", "--json", "--keep-raw")
    result = dsocr(*args)
    assert result.code == 1, result.stderr   # broken.pdf fails, the rest is converted
    assert result.stdout == ""
    assert "broken.pdf: cannot open this PDF" in result.stderr and "3 converted (4 pages" in result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.md")) == ["pdf_notes.md", "scan.md", "sub/report.md"]
    layout = json.loads((out / "pdf_notes_layout.json").read_text())
    assert [p["page"] for p in layout["pages"]] == [1, 3] and layout["meta"]["mode"] == "tiny"
    assert all(p["finish_reason"] in ("eos", "length", "repetition") for p in layout["pages"])
    names = {p["page"]: f"page-{p['page']:04d}" + ("" if p["finish_reason"] == "eos" else f".{p['finish_reason']}") + ".txt"
             for p in layout["pages"]}
    assert sorted(os.listdir(out / "pdf_notes_raw")) == sorted(names.values())
    assert not [p for p in out.rglob(".*.tmp")]

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.md")}
    again = dsocr(*args, "--skip-existing", "-v")
    assert again.code == 1
    assert again.stderr.count("skipped (done already)") + again.stderr.count("left damaged by an earlier run") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.md")} == before


def test_convert_reads_paths_from_stdin_and_writes_markdown_to_stdout(dsocr, batch, tiny_checkpoint, tmp_path):
    result = dsocr("convert", "-", "-o", "-", "--model", tiny_checkpoint, *TINY, "--no-layout",
                       "--page-separator", "<!-- page {page} -->", stdin=f"{batch / 'pdf_notes.pdf'}\n", cwd=tmp_path)
    assert result.code in (0, 1), result.stderr
    assert result.stdout.count("<!-- page ") == 2 and result.stdout.endswith("\n")


@pytest.mark.parametrize("args, message", [
    (("convert",), "no inputs"),
    (("convert", "x.pdf", "--pages", "3-1"), "runs backwards"),
    (("convert", "x.pdf", "--tables", "fancy"), "--tables fancy"),
    (("convert", "a.pdf", "b.pdf", "-o", "one.md"), "need an output folder"),
])
def test_usage_errors_exit_2_in_one_line(args, message, tmp_path):
    for name in ("x.pdf", "a.pdf", "b.pdf"):
        make_pdf(tmp_path / name, 1)
    result = run_dsocr(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_from_raw_with_a_folder_of_several_documents_is_a_usage_error(dsocr, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.pdf", "b.pdf"):
        make_pdf(folder / name, 1)
    out = dsocr("convert", folder, "-o", tmp_path / "out/", "--from-raw", RAW / "tables.txt")
    assert out.code == 2 and "renders one document" in out.stderr and not (tmp_path / "out").exists()
