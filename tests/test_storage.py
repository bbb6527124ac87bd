"""Inputs and outputs as URIs: file:// is a path; a store (memory:// here) is worked through local copies."""
from __future__ import annotations

import json

import fsspec
from typer.testing import CliRunner

from dsocr_cli import storage
from dsocr_cli.cli import app
from dsocr_cli.manifest import MANIFEST_NAME
from test_convert import make_pdf


def test_uris_and_paths():
    assert storage.local_path("file:///data/in%20box/a.pdf") == "/data/in box/a.pdf"
    assert storage.local_path("file:///data/out/") == "/data/out/"
    assert storage.local_path("out/") == "out/"
    assert storage.is_remote("s3://bucket/x") and not storage.is_remote("file:///x")
    assert not storage.is_uri(r"C:\scans") and not storage.is_uri("notes.pdf")


def test_a_batch_from_and_to_a_store_resumes_from_its_manifest(tmp_path, tiny_checkpoint):
    fs = fsspec.filesystem("memory")
    for name, pages in (("a.pdf", 1), ("sub/b.pdf", 2)):
        make_pdf(tmp_path / "pdf", pages)
        fs.pipe(f"/batch-in/{name}", (tmp_path / "pdf").read_bytes())
    args = ["convert", "memory://batch-in", "-o", "memory://batch-out/", "--model", str(tiny_checkpoint),
            "--mode", "tiny", "--max-new-tokens", "4", "--device", "cpu", "-v"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code in (0, 1), first.output
    assert sorted(fs.find("/batch-out")) == ["/batch-out/a.md", f"/batch-out/{MANIFEST_NAME}", "/batch-out/sub/b.md"]
    entries = [json.loads(line) for line in fs.cat(f"/batch-out/{MANIFEST_NAME}").decode().splitlines()]
    assert sorted(e["document"] for e in entries) == ["a.pdf", "sub/b.pdf"]

    fs.rm("/batch-out/a.md")  # lost from the store: converted again; b.pdf is skipped
    again = CliRunner().invoke(app, args)
    # b.pdf's pages stopped at --max-new-tokens: kept, and still damage in the exit status
    assert again.output.count("left damaged by an earlier run (2 pages incomplete)") == 1, again.output
    assert "1 converted" in again.output and again.exit_code == 1, again.output
    assert fs.isfile("/batch-out/a.md")
    fs.rm("/batch-in", recursive=True)
    fs.rm("/batch-out", recursive=True)
