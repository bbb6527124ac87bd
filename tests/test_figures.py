"""convert --parse-figures: a figure's second reading (figures.py), and the second pass through the
pipeline with a scripted runner and, end to end, with the tiny model."""
from __future__ import annotations

import json

import pytest
from rdkit import Chem

from dsocr_cli import convert as pipeline
from dsocr_cli.documents import expand_inputs
from dsocr_cli.figures import figure_markdown, read_figure
from dsocr_cli.generate import GenerationSettings
from dsocr_cli.markdown import FigureNote
from dsocr_cli.preprocess import MODES
from dsocr_cli.requests import OcrResult
from conftest import run_dsocr
from deep_cli import DEEP
from golden import raw_fixture
from test_convert import make_pdf


def fixture(name: str) -> str:
    return (DEEP / f"{name}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name, kind", [
    ("chart-bar-html", "chart"), ("chart-key-value", "chart"), ("chem-labelled", "chemistry"),
    ("chem-tagged-charges", "chemistry"), ("chem-bare-stereo", "chemistry"), ("chem-unclosed-ring", "chemistry"),
    ("describe-chart", "text"), ("chem-none", "text"), ("chem-several", "text"),
])
def test_what_a_figure_is(name, kind):
    assert read_figure(fixture(name)).kind == kind


def test_a_chart_becomes_its_table_under_the_figure():
    note = figure_markdown(read_figure(fixture("chart-bar-html")))
    assert note.alt is None
    assert note.below.startswith("Average monthly rainfall in Lisbon\n\n| Month | Rainfall (mm) |")


def test_a_structure_becomes_its_canonical_smiles():
    note = figure_markdown(read_figure(fixture("chem-bare-stereo")))
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles("CC(C)Cc1ccc([C@H](C)C(=O)O)cc1"))
    assert note == FigureNote(below=f"SMILES: `{canonical}`")


def test_an_invalid_structure_is_flagged_not_shown_as_a_molecule():
    reading = read_figure(fixture("chem-unclosed-ring"))
    assert reading.molecule is None and "unclosed ring" in reading.smiles_error
    assert figure_markdown(reading).below.startswith("*Structure not verified:* `invalid SMILES 'C1CCC(CC)C'")


def test_other_images_get_their_text_as_alt_text():
    note = figure_markdown(read_figure("A hermit crab\nin a shell, with `quotes`."))
    assert note == FigureNote(alt="A hermit crab in a shell, with `quotes`.")
    assert figure_markdown(read_figure("")) == FigureNote()


class FigureRunner:
    """Pages answer with the figures fixture; figures answer by name (chart, SMILES, bad SMILES, text)."""

    ANSWERS = {"p1_fig1.png": fixture("chart-bar-html"), "p1_fig2.png": "<smiles>[NH3+]CC(=O)[O-]</smiles>",
               "p1_fig3.png": "C1CCC(CC)C", "p1_fig4.png": "A small tide pool with three anemones."}

    def __init__(self):
        self.settings, self.runs = GenerationSettings(), []

    tokenizer, engines, devices, pages_done, live_requests = None, 1, [], [], False  # the rest of the Runner protocol

    def run(self, requests, settings=None, on_token=None):
        requests = list(requests)
        self.runs.append((settings, [r.key for r in requests], [r.prompt for r in requests]))
        for request in requests:
            if len(self.runs) == 1:
                yield OcrResult(request.key, raw_fixture("figures"), [1], "eos", 10, 5, page_size=request.image().size)
            else:
                yield OcrResult(request.key, self.ANSWERS[request.key[1]], [1], "eos", 10, 5, page_size=request.image.size)


def test_the_second_pass_reads_every_figure_and_renders_what_it_found(tmp_path):
    pdf = make_pdf(tmp_path / "notes.pdf", 1)
    options = pipeline.ConvertOptions(mode=MODES["base"], prompt="<image>\nConvert.", layout_json=True,
                                      figure_prompt="<image>\nParse the figure.")
    jobs, _ = pipeline.plan_jobs(expand_inputs([str(pdf)], None), str(tmp_path / "out.md"), options)
    runner = FigureRunner()
    [report] = list(pipeline.convert(jobs, runner, options))
    assert report.ok
    (_, pages, _), (settings, figures, prompts) = runner.runs
    assert settings == runner.settings and set(prompts) == {"<image>\nParse the figure."}
    assert sorted(name for _, name in figures) == sorted(FigureRunner.ANSWERS)
    markdown = (tmp_path / "out.md").read_text()
    assert "](out_images/p1_fig1.png)\n\nAverage monthly rainfall in Lisbon\n\n| Month | Rainfall (mm) |" in markdown
    assert "](out_images/p1_fig2.png)\n\nSMILES: `[NH3+]CC(=O)[O-]`" in markdown
    assert "](out_images/p1_fig3.png)\n\n*Structure not verified:* `invalid SMILES 'C1CCC(CC)C'" in markdown
    assert "![A small tide pool with three anemones.](out_images/p1_fig4.png)" in markdown
    assert (tmp_path / "out_images" / "p1_fig1.csv").read_text().startswith("Month,Rainfall (mm)")
    assert not (tmp_path / "out_images" / "p1_fig2.csv").exists()
    page = json.loads((tmp_path / "out_layout.json").read_text())["pages"][0]
    assert page["page"] == 1 and any("p1_fig3.png: structure not verified" in p for p in page["problems"])
    assert any(p.startswith("page 1, p1_fig3.png: structure not verified") for p in report.problems)


class LoggingRunner:
    """Pages answer with the figures fixture, figures with a caption; every request is logged."""

    def __init__(self, log):
        self.settings, self.log = GenerationSettings(), log

    tokenizer, engines, devices, pages_done, live_requests = None, 1, [], [], False  # the rest of the Runner protocol

    def run(self, requests, settings=None, on_token=None):
        for request in requests:
            self.log.append(("request", request.key))
            if isinstance(request.key[1], int):
                yield OcrResult(request.key, raw_fixture("figures"), [1], "eos", 10, 5, page_size=request.image().size)
            else:
                yield OcrResult(request.key, "A caption.", [1], "eos", 10, 5, page_size=request.image.size)


def test_with_parse_figures_documents_are_written_slice_by_slice(tmp_path, monkeypatch):
    """A long batch must not hold every document back until the last page: each slice of pages is
    read, its figures read, and its documents written before the next slice starts."""
    monkeypatch.setattr(pipeline, "FIGURE_SLICE_PAGES", 2)
    pdfs = [make_pdf(tmp_path / f"doc{i}.pdf", 1) for i in range(3)]
    options = pipeline.ConvertOptions(mode=MODES["base"], prompt="<image>\nConvert.",
                                      figure_prompt="<image>\nParse the figure.")
    jobs, _ = pipeline.plan_jobs(expand_inputs([str(p) for p in pdfs], None), str(tmp_path / "out") + "/", options)
    log = []
    for report in pipeline.convert(jobs, LoggingRunner(log), options):
        assert report.ok
        log.append(("written", report.source.path.name))
    events = [kind if kind == "written" else ("page" if isinstance(key[1], int) else "figure") for kind, key in log]
    assert events[:2] == ["page", "page"] and events[-1] == "written"
    first_written = events.index("written")
    assert "page" not in events[:first_written][2:]            # slice 1: two pages, then figures only
    assert events[first_written:].count("page") == 1 and events.count("written") == 3
    assert "A caption." in (tmp_path / "out" / "doc2.md").read_text()


def test_parse_figures_end_to_end_with_the_tiny_model(dsocr, tiny_checkpoint, tmp_path):
    pdf = make_pdf(tmp_path / "notes.pdf", 1)
    out = dsocr("convert", pdf, "-o", tmp_path / "out.md", "--parse-figures", "--model", tiny_checkpoint,
                    "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "8", "-q")
    assert out.code in (0, 1) and "Traceback" not in out.stderr and (tmp_path / "out.md").is_file()
    usage = run_dsocr("convert", "--from-raw", DEEP / "describe-chart.txt", "-o", "-", "--parse-figures")
    assert usage.returncode == 2 and "cannot go with --from-raw" in usage.stderr
