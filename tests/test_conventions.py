"""The command-line conventions people expect: -o for several inputs, --json everywhere."""
from __future__ import annotations

import json
from pathlib import Path

from dsocr_cli.documents import Source
from dsocr_cli.writers import folder_for_several, plan_outputs
from test_convert import TINY, make_pdf

DEEP = Path(__file__).resolve().parent.parent / "fixtures" / "deep"


def test_a_new_name_without_a_suffix_is_a_folder_for_several_inputs(tmp_path):
    out = str(tmp_path / "out")
    assert folder_for_several(out, several=True) == out + "/"
    assert folder_for_several(out, several=False) == out            # one input: the file "out"
    assert folder_for_several(out + ".md", several=True) == out + ".md"  # a file name: still an error later
    (tmp_path / "taken").write_text("x")
    assert folder_for_several(str(tmp_path / "taken"), several=True) == str(tmp_path / "taken")
    assert folder_for_several("-", several=True) == "-" and folder_for_several(None, several=True) is None
    sources = [Source(Path(f"{name}.pdf"), Path(f"{name}.pdf")) for name in "ab"]
    targets = plan_outputs(sources, folder_for_several(out, several=True))
    assert [t.markdown for t in targets] == [tmp_path / "out" / "a.md", tmp_path / "out" / "b.md"]


def test_per_image_commands_take_o_dir_without_the_slash(dsocr, tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    for name in ("chart-bar-html", "chart-key-value"):
        (raws / f"{name}.txt").write_text((DEEP / f"{name}.txt").read_text())
    out = dsocr("parse-chart", "--from-raw", raws, "-o", tmp_path / "out")
    assert out.code == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chart-bar-html.csv", "chart-key-value.csv"]
    one = dsocr("parse-chart", "--from-raw", raws / "chart-key-value.txt", "-o", tmp_path / "table")
    assert one.code == 0 and (tmp_path / "table").is_file()  # one image: the name is the file


def test_convert_takes_o_dir_without_the_slash(dsocr, tiny_checkpoint, tmp_path):
    for name in ("a.pdf", "b.pdf"):
        make_pdf(tmp_path / name, 1)
    out = dsocr("convert", tmp_path / "a.pdf", tmp_path / "b.pdf", "-o", tmp_path / "out", "--model", tiny_checkpoint,
                *TINY, "--no-layout", "-q")
    assert out.code in (0, 1), out.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "a.md" in written and "b.md" in written and "dsocr-manifest.jsonl" in written
    refused = dsocr("convert", tmp_path / "a.pdf", tmp_path / "b.pdf", "-o", tmp_path / "one.md", "--from-raw",
                    DEEP / "describe-chart.txt")
    assert refused.code == 2


def test_locate_takes_json_like_every_command(dsocr):
    plain = dsocr("locate", "--from-raw", DEEP / "locate-one.txt", "Total")
    flagged = dsocr("locate", "--json", "--from-raw", DEEP / "locate-one.txt", "Total")
    assert flagged.code == plain.code == 0 and flagged.stdout == plain.stdout
    assert json.loads(flagged.stdout)["boxes"]
