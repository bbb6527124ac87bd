"""The README's convert before/after is real: the shown Markdown is what dsocr writes for the sample
page from its saved raw output, and the layout drawing is made."""
from __future__ import annotations

from deep_cli import ROOT

SAMPLE = ROOT / "fixtures" / "readme"


def shown_markdown() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("    $ cat page.md\n", 1)[1].split("\n\n(", 1)[0]
    return "\n".join(line[4:] for line in block.split("\n")) + "\n"


def test_readme_before_and_after_is_what_convert_writes(dsocr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = dsocr("convert", SAMPLE / "page.png", "--from-raw", SAMPLE / "page.raw.txt", "-o", "page.md", "--annotate", "-q")
    assert out.code == 0, out.stderr
    assert (tmp_path / "page.md").read_text(encoding="utf-8") == shown_markdown()
    assert (tmp_path / "page_layout.png").stat().st_size > 10_000
    assert (tmp_path / "page_images" / "p1_fig1.png").exists()
