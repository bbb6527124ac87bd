"""The batch manifest: OUT_DIR/dsocr-manifest.jsonl, one JSON line per document as it finishes.

A line records a document's state (done or failed, with the reason), its output files and their
sha256, and a fingerprint of the options that shaped them. Lines are only ever appended, each with one write that is flushed and fsynced, so a crash
loses at most the line being written (a torn last line is ignored when read back). The last line
for a document wins. A re-run with the same options skips the documents whose last line says
done and whose outputs are all still there with the recorded checksums; the rest is converted again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from .documents import document_key
from .jobs import DocumentReport
from .writers import Target

MANIFEST_NAME = "dsocr-manifest.jsonl"


def fingerprint(options) -> str:
    """Names the conversion options (ConvertOptions): outputs made with other ones are not reused."""
    return hashlib.sha256(repr(options).encode("utf-8")).hexdigest()[:16]


def output_files(target: Target) -> list[Path]:
    """The files a document's conversion wrote: Markdown, layout JSON and drawings, figures, raw pages."""
    files = []
    for path in target.paths():
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    drawings = re.compile(re.escape(target.annotation.stem) + r"(_p\d+)?\.png")
    if target.annotation.parent.is_dir():
        files += sorted(p for p in target.annotation.parent.iterdir() if drawings.fullmatch(p.name))
    return files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    def __init__(self, folder: Path, options: str = ""):
        self.folder = Path(folder)
        self.options = options  # the fingerprint of this run's options
        self.path = self.folder / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: its document is simply done again
                self.entries[entry["document"]] = entry

    def finished(self, target: Target) -> bool:
        """Recorded done, and every output recorded is there with its checksum."""
        entry = self.entries.get(document_key(target.source))
        if entry is None or entry["state"] != "done" or entry.get("options") != self.options or not entry["outputs"]:
            return False
        for name, checksum in entry["outputs"].items():
            path = self.folder / name
            if not path.is_file() or sha256(path) != checksum:
                return False
        return True

    def record(self, report: DocumentReport) -> dict:
        """Append the document's line: done with its outputs' checksums, or failed with the reason."""
        entry = {"document": document_key(report.source), "state": "failed" if report.error else "done",
                 "options": self.options}
        if report.error:
            entry["reason"] = report.error
        else:
            entry["outputs"] = {self._name(path): sha256(path) for path in output_files(report.target)}
            entry["pages"] = report.pages
            if report.incomplete:
                entry["incomplete_pages"] = report.incomplete
            if report.failed:
                entry["failed_pages"] = report.failed
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line torn by a crash, so this one stays whole
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries[entry["document"]] = entry
        return entry

    def _name(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()
