"""Inputs of `dsocr convert`: which files to read, and their pages as RGB images, one at a time.

Arguments are files, folders (searched recursively) and `-` (one path per line on stdin). Every
problem is kept with the input it belongs to, so one bad file or page never stops a batch:
a missing path becomes a Source with an `error`, a file that cannot be opened raises
DocumentError, and a page that cannot be rendered is yielded as a PageFailure.

Pages are rendered only when asked for: `Document.pages()` is a generator, and
`Document.page_ref(n)` is a small picklable callable that renders page n where it is called
(in the engine's worker processes), so a 2,000-page PDF never exists as images all at once.
PDF pages are rendered at `dpi` (144, as the official PDF script); images are used as they are.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Iterable, Iterator, TextIO

from PIL import Image

from .errors import DsocrError
from .preprocess import orient, to_rgb

if TYPE_CHECKING:
    import pymupdf

SUPPORTED = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "GIF"})  # as Pillow names them
DPI = 144
# 100 million pixels: room for an A3 sheet scanned at 600 dpi (70 MP) or an A0 page rendered at
# 144 dpi (32 MP). The model never looks at more than ~4.7 MP of a page (a 1024 px view plus at most
# nine 640 px tiles), so more pixels only cost memory: ~300 MB a page as RGB, in each worker.
MAX_PAGE_PIXELS = 100_000_000



@functools.cache
def _pymupdf():
    """PyMuPDF, imported when the first PDF is opened (images and saved output do without it).
    MuPDF reports repairs and errors by itself, and PyMuPDF prints messages on stdout (where
    `-o -` writes Markdown): silenced, problems reach the user as DocumentError/PageFailure instead."""
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    pymupdf.set_messages(pylogging_level=logging.DEBUG)
    return pymupdf


class DocumentError(DsocrError):
    """A whole input cannot be read (missing, corrupt, encrypted, empty, unsupported)."""


class PageError(DsocrError):
    """One page cannot be rendered; the other pages of its document still can."""


@dataclass(frozen=True)
class Source:
    path: Path
    relative: PurePath          # output name: relative to the folder argument, or the file name
    root: Path | None = None    # the folder argument it was found in; None when named directly
    error: str | None = None    # why it cannot be read at all (e.g. missing)


def document_key(source: Source) -> str:
    """Names a document across runs and shards: its path below the folder argument."""
    return source.relative.as_posix()


def expand_inputs(args: list[str], stdin: TextIO | None, skip: Iterable[str | Path] = ()) -> list[Source]:
    """Sources for command-line arguments, in order, each file once.

    Folders are searched recursively in name order for supported types (case-insensitive), hidden
    files and folders left out, symlinked folders not followed; `skip` lists folders not to search
    (the output folder, so a second run does not read the first one's figures). `-` reads one
    argument per line from stdin. Files named directly are kept whatever their type.
    """
    skipped = {os.path.realpath(folder) for folder in skip}
    sources, seen = [], set()
    for arg in _arguments(args, stdin):
        for source in _expand(Path(arg), skipped):
            key = os.path.realpath(source.path) if source.error is None else None
            if key is None or key not in seen:
                seen.add(key)
                sources.append(source)
    return sources


def _arguments(args: list[str], stdin: TextIO | None) -> Iterator[str]:
    for arg in args:
        if arg != "-":
            yield arg
        elif stdin is None:
            raise DsocrError("'-' reads input paths from standard input, but there is none")
        else:
            yield from (line.strip() for line in stdin if line.strip())


def _expand(path: Path, skipped: set[str]) -> list[Source]:
    if path.is_dir():
        return _search(path, skipped)
    if path.is_file():
        return [Source(path, PurePath(path.name))]
    reason = "not a regular file or folder" if path.exists() else "no such file or folder"
    return [Source(path, PurePath(path.name or str(path)), error=reason)]


def _search(root: Path, skipped: set[str]) -> list[Source]:
    found, problems = [], []

    def unreadable(exc: OSError) -> None:
        folder = Path(exc.filename)
        problems.append(Source(folder, PurePath(root.name) / folder.relative_to(root), root,
                               f"cannot read folder: {exc.strerror}"))

    for folder, subfolders, files in os.walk(root, onerror=unreadable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")
                         and os.path.realpath(os.path.join(folder, name)) not in skipped]
        found += [Path(folder, name) for name in files if not name.startswith(".")
                  and Path(name).suffix.lower() in SUPPORTED and os.path.isfile(os.path.join(folder, name))]
    sources = sorted((Source(path, PurePath(path.relative_to(root)), root) for path in found),
                     key=lambda source: source.relative.parts)
    if not sources and not problems:
        problems.append(Source(root, PurePath(root.name or str(root)), root,
                               f"no supported files ({', '.join(sorted(SUPPORTED))}) in this folder"))
    return sources + problems


@dataclass(frozen=True)
class PageRef:
    """One page, not yet rendered: call it (in any process: it pickles small) for its RGB image.

    Raises PageError when the page cannot be rendered.
    """
    path: Path
    kind: str                # "pdf" or "image"
    number: int
    dpi: int = DPI
    max_pixels: int = MAX_PAGE_PIXELS

    def __call__(self) -> Image.Image:
        render = _render_pdf_page if self.kind == "pdf" else _render_image_frame
        try:
            return render(self)
        except PageError:
            raise
        except Exception as exc:  # anything a malformed file makes the decoders raise stays with its page
            raise PageError(_one_line(exc)) from None


@dataclass(frozen=True)
class Document:
    source: Source
    kind: str                # "pdf" or "image"
    page_count: int
    dpi: int = DPI
    max_pixels: int = MAX_PAGE_PIXELS

    def page_ref(self, number: int) -> PageRef:
        if not 1 <= number <= self.page_count:
            raise ValueError(f"page {number} is not in 1..{self.page_count}")
        return PageRef(self.source.path, self.kind, number, self.dpi, self.max_pixels)


def open_document(source: Source, dpi: int = DPI, max_pixels: int = MAX_PAGE_PIXELS) -> Document:
    """Check that a source can be read and count its pages; renders nothing."""
    if source.error is not None:
        raise DocumentError(source.error)
    kind = _kind(source.path)
    try:
        count = _pdf_page_count(source.path) if kind == "pdf" else _image_frame_count(source.path)
    except DocumentError:
        raise
    except Exception as exc:
        what = "PDF" if kind == "pdf" else "image"
        raise DocumentError(f"cannot open this {what}: {_one_line(exc)}") from None
    return Document(source, kind, count, dpi, max_pixels)


def _kind(path: Path) -> str:
    """By extension; a file with another extension is recognised by its content."""
    suffix = path.suffix.lower()
    if suffix in SUPPORTED:
        return "pdf" if suffix == ".pdf" else "image"
    try:
        with open(path, "rb") as file:
            if b"%PDF-" in file.read(1024):
                return "pdf"
        with _quiet_bombs(), Image.open(path) as image:
            if image.format in IMAGE_FORMATS:
                return "image"
    except Exception:
        pass
    raise DocumentError(f"unsupported file type (dsocr reads {', '.join(sorted(SUPPORTED))})")


def _pdf_page_count(path: Path) -> int:
    pdf = _open_pdf(str(path), *_stamp(path))
    if pdf.needs_pass:
        raise DocumentError("the PDF is encrypted and needs a password; decrypt it first (e.g. qpdf --decrypt)")
    if pdf.page_count == 0:
        raise DocumentError("the PDF has no pages")
    return pdf.page_count


def _image_frame_count(path: Path) -> int:
    """TIFF frames are pages; other formats give their first frame only (GIF, animated WebP, MPO)."""
    try:
        with _quiet_bombs(), Image.open(path) as image:
            return getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except Image.DecompressionBombError:
        return 1  # too large to trust: its one page fails, with the reason, when rendered


def _stamp(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=1)
def _open_pdf(path: str, mtime_ns: int, size: int) -> pymupdf.Document:
    """The PDF last opened in this process: pages arrive in runs from one document, and opening
    a large PDF (parsing its cross-reference table) can cost more than rendering a page."""
    return _pymupdf().open(path, filetype="pdf")


def _render_pdf_page(ref: PageRef) -> Image.Image:
    pymupdf = _pymupdf()
    page = _open_pdf(str(ref.path), *_stamp(ref.path))[ref.number - 1]
    zoom = pymupdf.Matrix(ref.dpi / 72, ref.dpi / 72)
    box = (page.rect * zoom).irect
    _check_size(box.width, box.height, ref.max_pixels, f"render it at a lower dpi than {ref.dpi}")
    pixmap = page.get_pixmap(matrix=zoom, alpha=False, colorspace=pymupdf.csRGB)
    return Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)


def _render_image_frame(ref: PageRef) -> Image.Image:
    with _quiet_bombs(), Image.open(ref.path) as image:
        image.seek(ref.number - 1)
        _check_size(*image.size, ref.max_pixels, "downscale it first")
        return to_rgb(orient(image))


def _check_size(width: int, height: int, max_pixels: int, advice: str) -> None:
    if width * height > max_pixels:
        raise PageError(f"page is {width} x {height} px ({width * height / 1e6:.1f} MP), over the "
                        f"{max_pixels / 1e6:g} MP limit; {advice}")


@contextlib.contextmanager
def _quiet_bombs() -> Iterator[None]:
    """Pillow warns about very large images; the page size limit above decides instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def parse_pages(spec: str, page_count: int) -> list[int]:
    """`--pages 1-3,7,10-` as sorted page numbers, duplicates removed.

    Items are N, A-B, A- (to the end) and -B (from the start), 1-based. Pages past the end of the
    document are left out, so one spec can serve a batch of documents of any length; the result may
    therefore be empty. Bad syntax raises DsocrError whatever page_count is (page_count=0 checks
    a spec up front).
    """
    selected: set[int] = set()
    for item in spec.split(","):
        first, last = _page_range(item.strip(), spec, page_count)
        selected.update(range(first, min(last, page_count) + 1))
    return sorted(selected)


def format_pages(numbers: list[int], most: int = 12) -> str:
    """Page numbers as --pages would take them, "1-3,7,10-12"; past `most` ranges, the first ones
    and how many more pages (a 1,237-page list stays one short line)."""
    ranges: list[list[int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in ranges[:most]]
    rest = sum(b - a + 1 for a, b in ranges[most:])
    return ",".join(shown) + (f" and {rest:,} more" if rest else "")


def _page_range(item: str, spec: str, page_count: int) -> tuple[int, int]:
    start, dash, end = item.partition("-")
    start, end = start.strip(), end.strip()
    given = [text for text in (start, end) if text]
    if not given or not all(text.isascii() and text.isdigit() and len(text) <= 9 for text in given):
        raise DsocrError(f"--pages {spec!r}: {item!r} is not a page number or range (e.g. 1-3,7,10-)")
    first = int(start) if start else 1
    last = (int(end) if end else page_count) if dash else first
    if first < 1:
        raise DsocrError(f"--pages {spec!r}: pages are numbered from 1")
    if dash and end and last < first:
        raise DsocrError(f"--pages {spec!r}: {item!r} runs backwards")
    return first, last
