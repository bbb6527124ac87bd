"""The README's "Deep parsing" examples are real: each `$ dsocr ...` line, run from the repository
root, prints exactly the output shown under it (stdout, then stderr)."""
from __future__ import annotations

import re
import shlex

import pytest

from deep_cli import ROOT


def examples() -> list[tuple[str, str]]:
    """(command line, shown output) for each indented `$ dsocr` block of the section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Deep parsing\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"^    \$ dsocr .*\n(?:(?:    .*)?\n)*", section, re.M):
        command, *shown = [line[4:] for line in block.rstrip("\n").split("\n")]
        found.append((command.removeprefix("$ dsocr "), "\n".join(shown).rstrip("\n") + "\n"))
    return found


def test_the_section_has_an_example_of_each_command():
    commands = {shlex.split(command)[0] for command, _ in examples()}
    assert commands == {"parse-chart", "parse-chem", "describe", "locate", "ocr"}


@pytest.mark.parametrize("command, shown", examples(), ids=[c for c, _ in examples()])
def test_readme_example_output_is_what_dsocr_prints(dsocr, monkeypatch, command, shown):
    monkeypatch.chdir(ROOT)
    out = dsocr(*shlex.split(command))
    assert (out.stdout + out.stderr).replace("\r\n", "\n") == shown
