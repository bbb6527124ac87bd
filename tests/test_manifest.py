"""The batch manifest: what it records, what a re-run skips and what it redoes."""
from __future__ import annotations

import json
from pathlib import Path, PurePath

from dsocr_cli.convert import DocumentReport
from dsocr_cli.documents import Source
from dsocr_cli.manifest import MANIFEST_NAME, Manifest
from dsocr_cli.writers import plan_outputs, write_atomic


def converted(out: Path, name: str, text: str = "# Title\n") -> DocumentReport:
    """A document 'converted' into `out`: its Markdown, a figure and a raw page written."""
    source = Source(Path("in") / name, PurePath(name), Path("in"))
    target = plan_outputs([source], f"{out}/")[0]
    write_atomic(target.markdown, text)
    write_atomic(target.figures / "p1_fig1.png", b"png")
    write_atomic(target.raw / "page-0001.txt", "raw")
    return DocumentReport(source, target, pages=1)


def test_done_documents_are_recorded_with_checksums_and_skipped(tmp_path):
    report = converted(tmp_path, "sub/a.pdf")
    Manifest(tmp_path, "opts").record(report)
    [line] = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    entry = json.loads(line)
    assert entry["document"] == "sub/a.pdf" and entry["state"] == "done" and entry["pages"] == 1
    assert sorted(entry["outputs"]) == ["sub/a.md", "sub/a_images/p1_fig1.png", "sub/a_raw/page-0001.txt"]
    assert all(len(checksum) == 64 for checksum in entry["outputs"].values())
    assert Manifest(tmp_path, "opts").finished(report.target)


def test_changed_missing_or_differently_made_outputs_are_redone(tmp_path):
    report = converted(tmp_path, "a.pdf")
    Manifest(tmp_path, "opts").record(report)
    assert not Manifest(tmp_path, "other options").finished(report.target)
    (report.target.figures / "p1_fig1.png").write_bytes(b"changed")
    assert not Manifest(tmp_path, "opts").finished(report.target)
    Manifest(tmp_path, "opts").record(report)
    assert Manifest(tmp_path, "opts").finished(report.target)
    report.target.markdown.unlink()
    assert not Manifest(tmp_path, "opts").finished(report.target)


def test_failures_are_recorded_with_the_reason_and_redone(tmp_path):
    report = converted(tmp_path, "a.pdf")
    Manifest(tmp_path, "opts").record(report)
    Manifest(tmp_path, "opts").record(DocumentReport(report.source, report.target, error="cannot open this PDF"))
    last = json.loads((tmp_path / MANIFEST_NAME).read_text().splitlines()[-1])
    assert last["state"] == "failed" and last["reason"] == "cannot open this PDF"
    assert not Manifest(tmp_path, "opts").finished(report.target)  # the last line wins


def test_a_line_torn_by_a_crash_is_ignored(tmp_path):
    done = converted(tmp_path, "a.pdf")
    torn = converted(tmp_path, "b.pdf")
    Manifest(tmp_path, "opts").record(done)
    Manifest(tmp_path, "opts").record(torn)
    text = (tmp_path / MANIFEST_NAME).read_text()
    (tmp_path / MANIFEST_NAME).write_text(text[:-20])
    manifest = Manifest(tmp_path, "opts")
    assert manifest.finished(done.target) and not manifest.finished(torn.target)
    manifest.record(torn)  # appending after a torn line still gives whole lines
    assert Manifest(tmp_path, "opts").finished(torn.target)
