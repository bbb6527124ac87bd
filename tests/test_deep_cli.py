"""Deep parsing commands on recorded model outputs (--from-raw): parse-chart, parse-chem, describe,
locate, ocr, and the plumbing they share (inputs, names, -o, exit codes)."""
from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image
from rdkit import Chem

from deep_cli import DEEP

RECEIPT = DEEP / "receipt.png"


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def one_line(err: str) -> str:
    [line] = err.strip().splitlines()
    return line


# ---- parse-chart ---------------------------------------------------------------------------------

def test_chart_merged_header_cells_as_csv_and_json(dsocr):
    raw = DEEP / "chart-grouped-header.txt"
    out = dsocr("parse-chart", "--from-raw", raw)
    assert out.code == 0 and out.stderr == ""
    assert out.stdout.endswith("\r\n") and out.stdout.replace("\r\n", "\n") == (DEEP / "chart-grouped-header.csv").read_text()
    record = json.loads(dsocr("parse-chart", "--json", "--from-raw", raw).stdout)
    assert record.pop("image") == str(raw)
    assert record == json.loads((DEEP / "chart-grouped-header.json").read_text())


def test_chart_units_and_empty_cells(dsocr):
    out = dsocr("parse-chart", "--from-raw", DEEP / "chart-bar-html.txt")
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["Month", "Rainfall (mm)"] and rows[2] == ["February", "81.2"] and rows[-1] == ["May", ""]
    record = json.loads(dsocr("parse-chart", "--json", "--from-raw", DEEP / "chart-bar-html.txt").stdout)
    assert record["title"] == "Average monthly rainfall in Lisbon" and record["units"] == [None, "mm"]
    assert record["rows"][-1] == ["May", None]


def test_chart_as_markdown(dsocr):
    out = dsocr("parse-chart", "--md", "--from-raw", DEEP / "chart-markdown.txt")
    assert out.code == 0
    assert out.stdout.startswith("Body weight of adult animals\n\n| Species | Male | Female |")
    assert "| Red fox | 6,5 kg | 5,4 kg |" in out.stdout


def test_chart_without_table_fails_with_one_line_and_keeps_raw_in_json(dsocr):
    raw = DEEP / "chart-none.txt"
    out = dsocr("parse-chart", "--from-raw", raw)
    assert out.code == 1 and out.stdout == ""
    assert one_line(out.stderr) == f"dsocr: {raw}: no table found in the model output"
    record = json.loads(dsocr("parse-chart", "--json", "--from-raw", raw).stdout)
    assert record["error"] == "no table found" and record["raw"] == raw.read_text()


def test_chart_truncated_is_read_and_noted(dsocr):
    out = dsocr("parse-chart", "--json", "--from-raw", DEEP / "chart-truncated.txt")
    assert out.code == 0 and "may be truncated" in out.stderr
    record = json.loads(out.stdout)
    assert record["title"] == "Global temperature anomaly" and record["columns"] == ["Decade", "Land", "Ocean"]


def test_chart_formats_are_exclusive(dsocr):
    out = dsocr("parse-chart", "--csv", "--json", "--from-raw", DEEP / "chart-none.txt")
    assert out.code == 2 and one_line(out.stderr) == "dsocr: error: give one of --csv, --json and --md"


def test_chart_folder_of_raw_outputs_to_output_folder(dsocr, tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    for name in ("chart-bar-html", "chart-none", "chart-key-value"):
        (raws / f"{name}.txt").write_text((DEEP / f"{name}.txt").read_text())
    out = dsocr("parse-chart", "--from-raw", raws, "-o", f"{tmp_path / 'out'}/")
    assert out.code == 1 and out.stdout == ""
    assert one_line(out.stderr).endswith("chart-none.txt: no table found in the model output")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chart-bar-html.csv", "chart-key-value.csv"]
    assert (tmp_path / "out" / "chart-key-value.csv").read_bytes() == (DEEP / "chart-key-value.csv").read_bytes()


# ---- parse-chem ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, written", [
    ("chem-bare-stereo", "CC(C)Cc1ccc([C@H](C)C(=O)O)cc1"),
    ("chem-tagged-charges", "[NH3+]CC(=O)[O-]"),
    ("chem-fenced", "c1ccc(/C=C/c2ccccc2)cc1"),
    ("chem-labelled", "Cn1c(=O)c2c(ncn2C)n(C)c1=O"),
    ("chem-several", "CC(=O)Oc1ccccc1C(=O)O"),
])
def test_chem_prints_rdkits_canonical_smiles(dsocr, name, written):
    out = dsocr("parse-chem", "--from-raw", DEEP / f"{name}.txt")
    assert out.code == 0 and out.stderr == ""
    assert out.stdout == Chem.MolToSmiles(Chem.MolFromSmiles(written)) + "\n"


def test_chem_keeps_stereo_and_charges(dsocr):
    stereo = dsocr("parse-chem", "--from-raw", DEEP / "chem-bare-stereo.txt").stdout
    charged = dsocr("parse-chem", "--from-raw", DEEP / "chem-tagged-charges.txt").stdout
    assert "@" in stereo and "+]" in charged and "-]" in charged


def test_chem_json_fields(dsocr):
    raw = DEEP / "chem-labelled.txt"
    record = json.loads(dsocr("parse-chem", "--json", "--from-raw", raw).stdout)
    assert record["formula"] == "C8H10N4O2" and record["inchikey"] == "RYYVLZVUVIJVGH-UHFFFAOYSA-N"
    assert record["exact_mass"] == pytest.approx(194.080376, abs=1e-5)
    assert record["inchi"].startswith("InChI=1S/C8H10N4O2/")
    assert record["input_smiles"] == "Cn1c(=O)c2c(ncn2C)n(C)c1=O" and record["raw"] == raw.read_text()


@pytest.mark.parametrize("name, reason", [
    ("chem-bad-valence", "Explicit valence for atom # 1 C"),
    ("chem-garbage", "syntax error"),
    ("chem-truncated", "extra open parentheses"),
    ("chem-unclosed-ring", "unclosed ring"),
])
def test_chem_invalid_smiles_fail_with_rdkits_reason(dsocr, name, reason):
    raw = DEEP / f"{name}.txt"
    out = dsocr("parse-chem", "--from-raw", raw)
    assert out.code == 1 and out.stdout == ""
    line = one_line(out.stderr)
    assert line.startswith(f"dsocr: {raw}: invalid SMILES '") and reason in line
    record = json.loads(dsocr("parse-chem", "--json", "--from-raw", raw).stdout)
    assert "smiles" not in record and reason in record["error"] and record["raw"] == raw.read_text()
    assert record["input_smiles"] in record["raw"]


def test_chem_without_smiles_fails(dsocr):
    out = dsocr("parse-chem", "--from-raw", DEEP / "chem-none.txt")
    assert out.code == 1 and one_line(out.stderr).endswith("no SMILES in the model output")


def test_chem_draws_svg_and_png(dsocr, tmp_path):
    raw = DEEP / "chem-labelled.txt"
    assert dsocr("parse-chem", "--from-raw", raw, "--draw", tmp_path / "mol.svg").code == 0
    assert b"<svg" in (tmp_path / "mol.svg").read_bytes()
    assert dsocr("parse-chem", "--from-raw", raw, "--draw", tmp_path / "mol.png").code == 0
    with Image.open(tmp_path / "mol.png") as drawing:
        assert drawing.format == "PNG"
    bad = dsocr("parse-chem", "--from-raw", raw, "--draw", tmp_path / "mol.gif")
    assert bad.code == 2 and "name an .svg or .png file" in bad.stderr


def test_chem_draws_nothing_for_an_invalid_smiles(dsocr, tmp_path):
    out = dsocr("parse-chem", "--from-raw", DEEP / "chem-unclosed-ring.txt", "--draw", tmp_path / "mol.svg")
    assert out.code == 1 and not (tmp_path / "mol.svg").exists()


# ---- describe ------------------------------------------------------------------------------------

def test_describe_text_and_json(dsocr):
    raw = DEEP / "describe-chart.txt"
    assert dsocr("describe", "--from-raw", raw).stdout == raw.read_text()
    assert json.loads(dsocr("describe", "--json", "--from-raw", raw).stdout) == {
        "image": str(raw), "caption": raw.read_text().strip()}


def test_describe_empty_output_fails(dsocr):
    out = dsocr("describe", "--from-raw", DEEP / "describe-empty.txt")
    assert out.code == 1 and one_line(out.stderr).endswith("the model gave no caption")


# ---- locate --------------------------------------------------------------------------------------

def locate(dsocr, fixture: str, *more):
    return dsocr("locate", RECEIPT, "Total", "--from-raw", DEEP / f"{fixture}.txt", *more)


def test_locate_boxes_in_grid_and_pixels(dsocr):
    out = locate(dsocr, "locate-one")
    assert out.code == 0 and out.stderr == ""
    record = json.loads(out.stdout)
    assert record["image"] == str(RECEIPT) and record["text"] == "Total" and record["size"] == [400, 300]
    assert record["boxes"] == [{"label": "Total", "box": [620, 808, 870, 905], "box_px": [248, 242, 348, 271]}]


def test_locate_several_boxes(dsocr):
    record = json.loads(locate(dsocr, "locate-several").stdout)
    assert [b["box"] for b in record["boxes"]] == [[40, 120, 250, 180], [620, 808, 870, 905]]


def test_locate_out_of_range_box_is_clamped_and_noted(dsocr):
    out = locate(dsocr, "locate-out-of-range")
    assert out.code == 0 and "out of range, clamped" in one_line(out.stderr)
    record = json.loads(out.stdout)
    assert record["boxes"][0]["box"] == [0, 780, 999, 999] and record["boxes"][0]["box_px"] == [0, 234, 400, 300]
    assert record["problems"] == ["box [-12, 780, 1040, 1003] out of range, clamped"]


def test_locate_malformed_box_is_left_out_and_noted(dsocr):
    out = locate(dsocr, "locate-malformed")
    assert out.code == 0 and "unreadable box data" in one_line(out.stderr)
    assert [b["box"] for b in json.loads(out.stdout)["boxes"]] == [[40, 120, 250, 180]]


@pytest.mark.parametrize("fixture", ["locate-truncated", "locate-none"])
def test_locate_without_a_readable_box_fails(dsocr, fixture):
    out = locate(dsocr, fixture)
    assert out.code == 1 and "no box for 'Total' in the model output" in out.stderr
    record = json.loads(out.stdout)
    assert record["boxes"] == [] and record["raw"] == (DEEP / f"{fixture}.txt").read_text()


def test_locate_annotate_draws_on_the_image(dsocr, tmp_path):
    assert locate(dsocr, "locate-one", "--annotate", tmp_path / "boxes.png").code == 0
    with Image.open(tmp_path / "boxes.png") as drawing, Image.open(RECEIPT) as page:
        assert drawing.size == page.size and drawing.getpixel((300, 243)) != page.convert("RGB").getpixel((300, 243))


def test_locate_usage_errors(dsocr, tmp_path):
    no_image = dsocr("locate", "Total", "--from-raw", DEEP / "locate-one.txt", "--annotate", tmp_path / "a.png")
    assert no_image.code == 2 and "--annotate draws on the image" in no_image.stderr
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("<image>\nFind it.")
    no_placeholder = locate(dsocr, "locate-one", "--prompt-file", prompt)
    assert no_placeholder.code == 2 and "{text}" in no_placeholder.stderr


# ---- ocr -----------------------------------------------------------------------------------------

def test_ocr_from_raw_layout_blocks_in_pixels(dsocr):
    record = json.loads(dsocr("ocr", RECEIPT, "--layout", "--json", "--from-raw", DEEP / "locate-one.txt").stdout)
    assert record["blocks"] == [{"label": "Total", "text": "", "boxes": [[620, 808, 870, 905]],
                                 "boxes_px": [[248, 242, 348, 271]]}]
    assert "token_ids" not in record and record["size"] == [400, 300]


# ---- shared plumbing -----------------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    """A folder of two images (one in a subfolder), a PDF it must skip, and their saved outputs."""
    folder, raws = tmp_path / "imgs", tmp_path / "raws"
    (folder / "sub").mkdir(parents=True)
    (raws / "sub").mkdir(parents=True)
    Image.new("RGB", (200, 100), "white").save(folder / "a.png")
    Image.new("RGB", (300, 150), "white").save(folder / "sub" / "b.jpg")
    (folder / "doc.pdf").write_bytes(b"%PDF-1.4 not read here")
    (raws / "a.txt").write_text((DEEP / "chem-labelled.txt").read_text())
    (raws / "sub" / "b.txt").write_text((DEEP / "chem-tagged-charges.txt").read_text())
    return folder, raws


def test_folder_input_with_saved_outputs_gives_json_lines_named_per_image(dsocr, images):
    folder, raws = images
    out = dsocr("parse-chem", folder, "--json", "--from-raw", raws)
    assert out.code == 0, out.stderr
    records = lines(out.stdout)
    assert [r["image"] for r in records] == [str(folder / "a.png"), str(folder / "sub" / "b.jpg")]
    assert [r["formula"] for r in records] == ["C8H10N4O2", "C2H5NO2"]


def test_several_images_as_text_get_a_name_line_each(dsocr, images):
    folder, raws = images
    out = dsocr("parse-chem", folder / "a.png", folder / "sub" / "b.jpg", "--from-raw", raws / "sub")
    assert out.code == 1 and one_line(out.stderr) == f"dsocr: {folder / 'a.png'}: no saved output {raws / 'sub' / 'a.txt'}"
    assert out.stdout == f"==> {folder / 'sub' / 'b.jpg'} <==\n[NH3+]CC(=O)[O-]\n"


def test_stdin_paths_and_one_bad_image_do_not_stop_the_others(dsocr, images, tmp_path):
    folder, raws = images
    bad = folder / "bad.png"
    bad.write_bytes(b"not an image")
    (raws / "bad.txt").write_text("CCO")
    stdin = f"{folder / 'a.png'}\n{bad}\n{tmp_path / 'missing.png'}\n"
    out = dsocr("parse-chem", "-", "--json", "--from-raw", raws, stdin=stdin)
    assert out.code == 1
    records = lines(out.stdout)
    assert [r["image"] for r in records] == [str(folder / "a.png"), str(bad), str(tmp_path / "missing.png")]
    assert records[0]["formula"] == "C8H10N4O2"
    assert "cannot open this image" in records[1]["error"] and records[2]["error"] == "no such file or folder"
    assert len(out.stderr.strip().splitlines()) == 2 and "Traceback" not in out.stderr


def test_per_image_files_and_drawings(dsocr, images, tmp_path):
    folder, raws = images
    out = dsocr("parse-chem", folder, "--from-raw", raws, "-o", f"{tmp_path / 'out'}/", "--draw", tmp_path / "mol.svg")
    assert out.code == 0 and out.stdout == ""
    assert (tmp_path / "out" / "a.smi").read_text() == "Cn1c(=O)c2c(ncn2C)n(C)c1=O\n"
    assert (tmp_path / "out" / "sub" / "b.smi").read_text() == "[NH3+]CC(=O)[O-]\n"
    assert (tmp_path / "mol_a.svg").is_file() and (tmp_path / "mol_sub_b.svg").is_file()


def test_usage_errors(dsocr, images, tmp_path):
    folder, raws = images
    one_file = dsocr("describe", folder, "--from-raw", raws, "-o", tmp_path / "one.txt")
    assert one_file.code == 2 and "need an output folder" in one_file.stderr
    raw_file = dsocr("describe", folder, "--from-raw", DEEP / "describe-chart.txt")
    assert raw_file.code == 2 and "give a folder for several" in raw_file.stderr
    no_input = dsocr("describe")
    assert no_input.code == 2 and one_line(no_input.stderr).startswith("dsocr: error: no images")
    missing_raw = dsocr("describe", "--from-raw", tmp_path / "nothing")
    assert missing_raw.code == 2 and "no such file or folder" in missing_raw.stderr
    pdf = dsocr("describe", folder / "doc.pdf", "--from-raw", raws)
    assert pdf.code == 1 and "dsocr convert reads documents" in pdf.stderr


def test_output_file_for_one_image(dsocr, tmp_path):
    out = dsocr("parse-chart", "--md", "--from-raw", DEEP / "chart-markdown.txt", "-o", tmp_path / "table.md")
    assert out.code == 0 and out.stdout == ""
    assert (tmp_path / "table.md").read_text().startswith("Body weight of adult animals\n\n| Species |")
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]      # no temporary file left behind
