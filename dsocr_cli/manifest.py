"""The batch manifest: OUT_DIR/dsocr-manifest.jsonl, one JSON line per document as it finishes.

A line records a document's state (done; incomplete, with the pages unfinished or unread; or
failed, with the reason), its output files and their sha256, and a fingerprint of the options that
shaped them. Lines are only ever appended, each with one write that is flushed and fsynced, so a crash
loses at most the line being written (a torn last line is ignored when read back, and cut off before
the next line is appended). The last line
for a document wins. A re-run with the same options skips the documents whose last line says
done or incomplete and whose outputs are all still there with the recorded checksums (an incomplete
one still counts as damage in its exit status; --retry-incomplete converts those again); the rest
is converted again. A line that cannot be written (a full or read-only disk) is that document's
error (ManifestError), not the batch's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path, PurePosixPath
from .documents import document_key
from .errors import DsocrError
from .jobs import DocumentReport
from .writers import Target

MANIFEST_NAME = "dsocr-manifest.jsonl"
MANIFESTS = "dsocr-manifest*.jsonl"  # with --shard I/N each shard appends to its own (shard_manifest)
KEPT = ("done", "incomplete")  # states whose outputs a re-run keeps


class ManifestError(DsocrError):
    """The manifest line of one document could not be written."""


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


def inside(name: str) -> bool:
    """A recorded output name stays inside the folder: relative, with no '..' (names are data)."""
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts and "\\" not in name \
        and ":" not in parts[0]


def _drop_torn_tail(fd: int) -> None:
    """Cut a last line that a crash tore (no newline yet) off the file, so every line is whole."""
    end = size = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - (1 << 16))
        block = os.pread(fd, end - start, start)
        if b"\n" in block:
            keep = start + block.rindex(b"\n") + 1
            break
        end = start
    else:
        keep = 0
    if keep != size:
        os.ftruncate(fd, keep)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DsocrError(f"cannot read {path}: {exc.strerror or exc}") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_name(shard=None) -> str:
    """The file this run appends to: shards of one batch never write the same file (an object
    store would keep only the last upload of it)."""
    return MANIFEST_NAME if shard is None else f"dsocr-manifest.shard-{shard.index}-of-{shard.count}.jsonl"


class Manifest:
    """Every manifest in the folder read (the shards' too: a batch may be resumed sharded otherwise),
    this run's lines appended to `name`."""

    def __init__(self, folder: Path, options: str = "", name: str = MANIFEST_NAME):
        self.folder = Path(folder)
        self.options = options  # the fingerprint of this run's options
        self.path = self.folder / name
        self.entries: dict[str, dict] = {}
        paths = sorted(p for p in self.folder.glob(MANIFESTS) if p.is_file()) if self.folder.is_dir() else []
        for path in sorted(paths, key=lambda p: p == self.path):  # this run's own last: its lines win
            for line in _lines(path):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: its document is simply done again
                if isinstance(entry, dict) and isinstance(entry.get("document"), str):
                    self.entries[entry["document"]] = entry

    def finished(self, target: Target, retry_incomplete: bool = False) -> bool:
        """Recorded done (or incomplete, unless those are retried), and every output recorded is
        there with its checksum."""
        entry = self.entries.get(document_key(target.source))
        states = ("done",) if retry_incomplete else KEPT
        if entry is None or entry["state"] not in states or entry.get("options") != self.options or not entry["outputs"]:
            return False
        for name, checksum in entry["outputs"].items():
            if not inside(name):
                return False
            path = self.folder / name
            if not path.is_file() or sha256(path) != checksum:
                return False
        return True

    def incomplete(self, target: Target) -> bool:
        """Recorded incomplete by a run with these options (its well-read pages can be kept)."""
        entry = self.entries.get(document_key(target.source), {})
        return entry.get("state") == "incomplete" and entry.get("options") == self.options

    def damage(self, target: Target) -> tuple[list[int], list[str]]:
        """The incomplete pages and the unread ones ("page N: reason") recorded for a kept document."""
        entry = self.entries.get(document_key(target.source), {})
        return list(entry.get("incomplete_pages", [])), list(entry.get("failed_pages", []))

    def record(self, report: DocumentReport) -> dict:
        """Append the document's line: done or incomplete with its outputs' checksums, or failed with
        the reason. Raises ManifestError when the line cannot be written."""
        state = "failed" if report.error else "incomplete" if report.incomplete or report.failed else "done"
        entry = {"document": document_key(report.source), "state": state, "options": self.options}
        if report.error:
            entry["reason"] = report.error
        else:
            try:
                entry["outputs"] = {self._name(path): sha256(path) for path in output_files(report.target)}
            except OSError as exc:
                raise ManifestError(f"cannot read back its outputs: {exc.strerror or exc}") from None
            entry["pages"] = report.pages
            if report.incomplete:
                entry["incomplete_pages"] = report.incomplete
            if report.failed:
                entry["failed_pages"] = report.failed
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self._append((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        except OSError as exc:
            raise ManifestError(f"cannot record it in {self.path}: {exc.strerror or exc}") from None
        self.entries[entry["document"]] = entry
        return entry

    def _append(self, line: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o666)
        try:
            _drop_torn_tail(fd)
            written = os.write(fd, line)
            if written != len(line):  # a full disk: the rest of the line is torn off
                raise OSError(28, "No space left on device (the line was cut short)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _name(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()
