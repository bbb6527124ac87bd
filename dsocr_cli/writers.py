"""Where `dsocr convert` writes each input's outputs, and writing them so none is ever half there.

Every file is written to a hidden temporary file in its folder, flushed to disk, then renamed over
the final name: a reader (or a resumed batch) sees the old file or the new one, never a partial
one. Write a document's Markdown last: its presence then means the document is done (`is_done`).

Output names (`plan_outputs`), for an input `report.pdf`:
  no -o           beside the input: report.md, report_images/, report_layout.json,
                  report_layout.pdf, report_raw/ (inputs found by searching a folder need -o DIR/,
                  or a second run would read the first one's figures as inputs)
  -o out.md       that file (one input only); the rest beside it: out_images/, out_layout.json, ...
  -o DIR/         DIR/<relative path>.md, keeping the input's path below the folder argument
                  (a path ending in / or an existing folder; needed for several inputs)
  -o -            Markdown on stdout (one input only); the rest in the current folder, named after
                  the input (report_images/, ...), so `dsocr convert report.pdf -o - > report.md` works
The name is the input's name without its extension (pdf_notes.pdf -> pdf_notes.md). Inputs that
would share a name keep their extension when extensions differ (a.pdf.md, a.png.md); a name still
taken (by another input's outputs, or by an input itself) gets -2, -3, ... in input order.
Names are compared case-insensitively, as macOS and Windows file systems do.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import secrets
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePath

from PIL import Image

from .documents import Source
from .errors import DsocrError


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")  # write_atomic's own naming: .NAME.1a2b3c4d.tmp
_DRAWING = re.compile(r"(.+?)(?:_p\d+)?\.png")          # --annotate on images: NAME_layout[_p3].png


def remove_temporaries(targets: list[Target]) -> int:
    """Delete what write_atomic left of these targets' files when a run was killed mid-write (a run
    holding the output folder's lock calls it before writing); how many were removed. Each folder is
    listed once, whatever the number of targets in it."""
    owned: dict[Path, set[str]] = defaultdict(set)  # folder -> names of our files in it
    folders: list[Path] = []                         # per-target folders: every temporary inside is ours
    for target in targets:
        for path in target.paths():
            owned[path.parent].add(path.name)
            folders.append(path)
    removed = 0
    for folder, names in owned.items():
        for entry in _listing(folder):
            match = _TEMPORARY.fullmatch(entry.name)
            name = match.group(1) if match else None
            drawing = _DRAWING.fullmatch(name) if name else None
            if name and (name in names or (drawing and drawing.group(1) + ".pdf" in names)):
                removed += _unlink(Path(entry.path))
    for folder in folders:
        if folder.is_dir():
            removed += sum(_unlink(p) for p in folder.rglob(".*.tmp") if _TEMPORARY.fullmatch(p.name))
    return removed


def _listing(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if entry.name.endswith(".tmp")]
    except OSError:
        return []


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except OSError:
        return 0


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (str as UTF-8) to `path`, creating its folder; all or nothing."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never write through someone else's file or link; mode 0o666 minus the umask, as open().
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(exc, OSError):
            raise DsocrError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def save_image(path: str | Path, image: Image.Image, format: str | None = None) -> None:
    """Encode `image` (format from the file extension unless given) and write it atomically."""
    format = format or Image.registered_extensions().get(Path(path).suffix.lower())
    if format is None:
        raise DsocrError(f"cannot tell which image format to write for {path}")
    if format.upper() == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=format)
    except (KeyError, ValueError, OSError) as exc:
        raise DsocrError(f"cannot encode {path} as {format}: {exc}") from None
    write_atomic(path, buffer.getvalue())


@dataclass(frozen=True)
class Target:
    """Where one input's outputs go. Paths are as the user gave them (relative to the current folder)."""
    source: Source
    markdown: Path | None   # None: standard output
    figures: Path           # folder of figure images
    figure_link: str        # how the Markdown links that folder (relative to it, URL-safe, ends in /)
    layout: Path            # layout JSON
    annotation: Path        # layout drawn over the pages, a PDF
    raw: Path               # folder of the model's raw output

    def paths(self) -> list[Path]:
        paths = (self.markdown, self.figures, self.layout, self.annotation, self.raw)
        return [path for path in paths if path is not None]


def plan_outputs(sources: list[Source], output: str | None) -> list[Target]:
    """One Target per readable source (those with an error get none), in order; see the module doc."""
    readable = [source for source in sources if source.error is None]
    if output is not None and output != "-" and is_folder(output):
        return _unique(readable, [Path(output) / s.relative.parent for s in readable], markdown_out=True)
    if output is not None and len(readable) > 1:
        raise DsocrError(f"-o {output}: {len(readable)} inputs need an output folder: write it as -o DIR/")
    if output == "-":
        return _unique(readable, [Path() for _ in readable], markdown_out=False)
    if output is not None:
        return [_file_target(readable[0], Path(output))] if readable else []
    searched = [s for s in readable if s.root is not None]
    if searched:
        raise DsocrError(f"{searched[0].root}: a folder's inputs need an output folder: add -o DIR/")
    return _unique(readable, [s.path.parent for s in readable], markdown_out=True)


def is_done(target: Target) -> bool:
    """The Markdown exists, so (written last and atomically) this input was converted completely."""
    return target.markdown is not None and target.markdown.is_file()


def is_folder(output: str) -> bool:
    """-o names a folder: it ends in / or is one."""
    return output.endswith(("/", os.sep)) or os.path.isdir(output)


def folder_for_several(output: str | None, several: bool) -> str | None:
    """-o for several inputs: a name that does not exist yet and has no file suffix ("out") is the
    folder "out/"; a name with a suffix ("out.md") still reads as one file, and stays an error."""
    if (output and output != "-" and several and not is_folder(output) and not os.path.lexists(output)
            and not PurePath(output).suffix):
        return output + "/"
    return output


def _target(source: Source, base: Path, markdown: Path | None) -> Target:
    """Outputs named after `base` (a path without extension), beside the Markdown."""
    return Target(source, markdown, _beside(base, "_images"), _link(base.name + "_images") + "/",
                  _beside(base, "_layout.json"), _beside(base, "_layout.pdf"), _beside(base, "_raw"))


def _beside(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


def _file_target(source: Source, markdown: Path) -> Target:
    base = markdown.with_name(markdown.stem) if markdown.suffix else markdown
    target = _target(source, base, markdown)
    if _key(source.path) in {_key(path) for path in target.paths()}:
        raise DsocrError(f"-o {markdown}: an output would overwrite the input {source.path}; "
                         "choose another name")
    return target


def _unique(sources: list[Source], folders: list[Path], markdown_out: bool) -> list[Target]:
    """Targets named after each source in its folder, with no two sharing a path (see module doc)."""
    groups = defaultdict(list)
    for source, folder in zip(sources, folders):
        groups[_key(folder / source.relative.stem)].append(source.relative.suffix.casefold())
    taken = {_key(source.path) for source in sources}
    targets = []
    for source, folder in zip(sources, folders):
        stem = source.relative.stem
        name = source.relative.name if len(set(groups[_key(folder / stem)])) > 1 else stem
        for candidate in itertools.chain([name], (f"{name}-{n}" for n in itertools.count(2))):
            base = folder / candidate
            target = _target(source, base, _beside(base, ".md") if markdown_out else None)
            keys = {_key(path) for path in target.paths()}
            if not keys & taken:
                break
        taken |= keys
        targets.append(target)
    return targets


def _key(path: Path) -> str:
    """A path as the file system would compare it, case-insensitively."""
    return os.path.normcase(os.path.abspath(path)).casefold()


def _link(name: str) -> str:
    """A file name as a Markdown link target: characters that would end or alter the link escaped."""
    return "".join(ch if ch.isprintable() and not ch.isspace() and ch not in "%()<>[]\\#?" else
                    "".join(f"%{byte:02X}" for byte in ch.encode("utf-8")) for ch in name)
