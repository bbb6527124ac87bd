"""Start-up: a command imports what it uses. `dsocr --help`, `CMD --help`, `--version` and the
--from-raw paths run in a fresh interpreter, which then lists the heavy packages it imported."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsocr_cli.cli import COMMANDS, app
from test_convert import make_pdf

ROOT = Path(__file__).resolve().parent.parent
DEEP = ROOT / "fixtures" / "deep"
README = ROOT / "fixtures" / "readme"
HEAVY = ("torch", "rdkit", "fitz", "pymupdf", "numpy", "triton", "fastapi", "uvicorn")

# Runs dsocr as `python -m dsocr_cli` would, then prints the heavy top-level packages imported.
PROBE = """
import json, runpy, sys
args, watched = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["dsocr", *args]
try:
    runpy.run_module("dsocr_cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def imported_by(*args, cwd=None) -> tuple[int, set[str], str]:
    """(exit code, heavy packages imported, stderr) of `dsocr ARGS` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in args]), json.dumps(HEAVY)],
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    line = [l for l in result.stderr.splitlines() if l.startswith("PROBE ")]
    assert line, result.stderr
    probe = json.loads(line[-1][len("PROBE "):])
    return probe["code"], set(probe["heavy"]), result.stderr


def test_help_and_version_import_nothing_heavy():
    for args in (("--help",), ("-h",), ("--version",), ()):
        code, heavy, err = imported_by(*args)
        assert code == 0 and not heavy, (args, heavy, err)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_commands_help_imports_nothing_heavy(command):
    code, heavy, err = imported_by(command, "--help")
    assert code == 0 and not heavy, (heavy, err)


def test_convert_from_raw_of_an_image_needs_no_torch_rdkit_or_pymupdf(tmp_path):
    code, heavy, err = imported_by("convert", README / "page.png", "--from-raw", README / "page.raw.txt",
                                   "-o", tmp_path / "page.md", "--json")
    assert code == 0 and (tmp_path / "page.md").stat().st_size > 0, err
    assert not heavy & {"torch", "rdkit", "fitz", "pymupdf"}, heavy


def test_convert_from_raw_of_a_pdf_needs_pymupdf_only(tmp_path):
    make_pdf(tmp_path / "doc.pdf", 1)
    (tmp_path / "doc.raw.txt").write_text((README / "page.raw.txt").read_text(encoding="utf-8"), encoding="utf-8")
    code, heavy, err = imported_by("convert", tmp_path / "doc.pdf", "--from-raw", tmp_path / "doc.raw.txt",
                                   "-o", tmp_path / "doc.md")
    assert code == 0, err
    assert "pymupdf" in heavy and not heavy & {"torch", "rdkit"}, heavy


@pytest.mark.parametrize("args, allowed", [
    (("parse-chart", "--from-raw", DEEP / "chart-key-value.txt", "--json"), set()),
    (("describe", "--from-raw", DEEP / "describe-chart.txt"), set()),
    (("locate", "--from-raw", DEEP / "locate-one.txt", "x"), set()),
    (("ocr", "--from-raw", DEEP / "describe-chart.txt"), set()),
    (("parse-chem", "--from-raw", DEEP / "chem-labelled.txt"), {"rdkit"}),  # RDKit checks the SMILES
])
def test_the_per_image_commands_from_raw_need_no_torch(args, allowed):
    code, heavy, err = imported_by(*args)
    assert code == 0, err
    assert heavy <= allowed | {"numpy"}, heavy  # RDKit brings numpy


def test_the_listing_shows_each_commands_own_first_paragraph():
    """COMMANDS' summaries (shown by `dsocr --help` without importing the commands) are the
    commands' docstrings, so the two cannot drift apart."""
    for name, entry in COMMANDS.items():
        tree = ast.parse((ROOT / "dsocr_cli" / "cli" / f"{entry.module}.py").read_text(encoding="utf-8"))
        function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == entry.function)
        first = " ".join(ast.get_docstring(function).split("\n\n")[0].split())
        assert entry.summary == first, name


def test_version_and_short_help(dsocr):
    from dsocr_cli import __version__

    assert dsocr("--version").stdout == f"dsocr {__version__}\n"
    short = dsocr("-h")
    assert short.code == 0 and all(name in short.stdout for name in COMMANDS)
    assert dsocr("convert", "-h").code == 0


def test_flags_show_no_type_and_choices_show_their_values(dsocr):
    out = dsocr("convert", "--help").stdout
    assert "<bool>" not in out
    assert "<auto|html|markdown>" in out and "<dollars|latex>" in out and "tiny|small|base" in out
    assert "<bool>" not in dsocr("ocr", "--help").stdout


def test_an_unknown_command_suggests_the_nearest(dsocr):
    out = dsocr("lcate")
    assert out.code == 2 and "locate" in out.stderr
    assert app.info.cls.table is COMMANDS


@pytest.mark.parametrize("args", [("info",), ("info", "--json")])
def test_info_imports_nothing_heavy(args):
    code, heavy, err = imported_by(*args)
    assert code == 0 and not heavy, (heavy, err)


def test_a_package_without_bytecode_is_named_with_its_folder(tmp_path, monkeypatch):
    """What `dsocr info` checks torch for: without bytecode every call compiles it first."""
    import py_compile

    from dsocr_cli.bytecode import missing_bytecode
    package = tmp_path / "uncompiled_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("value = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "pycache_prefix", None)
    assert missing_bytecode("uncompiled_pkg") == str(package)
    py_compile.compile(str(package / "__init__.py"))  # where Python looks for it
    assert missing_bytecode("uncompiled_pkg") is None
    assert missing_bytecode("no_such_package_anywhere") is None
