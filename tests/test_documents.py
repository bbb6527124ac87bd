"""Inputs: which files a command line names, and their pages, rendered one at a time."""
from __future__ import annotations

import inspect
import io
import os
import pickle
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pymupdf
import pytest
from PIL import Image

from dsocr_cli.documents import (DocumentError, PageError, Source, expand_inputs, open_document,
                                 parse_pages)
from dsocr_cli.errors import DsocrError

STRIPE = 10  # page k of a test PDF is black from x=0 to x=STRIPE*k points


def make_pdf(path: Path, pages: int = 3, size: tuple[float, float] = (200, 100), sizes=None) -> Path:
    """A PDF whose page k carries a black stripe k*STRIPE points wide, so pages can be told apart."""
    doc = pymupdf.open()
    for k, (width, height) in enumerate(sizes or [size] * pages, start=1):
        page = doc.new_page(width=width, height=height)
        page.draw_rect(pymupdf.Rect(0, 0, STRIPE * k, height), color=(0, 0, 0), fill=(0, 0, 0))
    return touch(path, doc.tobytes())


@dataclass
class Rendered:
    """A page as these tests look at it: its image, or why it could not be rendered."""
    number: int
    image: Image.Image | None
    reason: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def rendered_pages(document, numbers=None):
    """The document's pages (all, or `numbers`), each rendered only when the loop reaches it."""
    for number in numbers if numbers is not None else range(1, document.page_count + 1):
        ref = document.page_ref(number)
        try:
            yield Rendered(number, ref())
        except PageError as exc:
            yield Rendered(number, None, str(exc))


def stripe_width(page: Rendered, dpi: int = 144) -> int:
    """Which test page this is, read back from its pixels."""
    row = np.asarray(page.image)[page.size[1] // 2, :, 0]
    return int((row < 128).sum() * 72 / dpi / STRIPE + 0.5)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def only_page(path: Path):
    pages = list(rendered_pages(open_document(expand_inputs([str(path)], None)[0])))
    assert len(pages) == 1
    return pages[0]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that claims to be width x height (pixel data missing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return touch(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                 + chunk(b"IEND", b""))


# --- expand_inputs --------------------------------------------------------------------------------

def test_folders_are_searched_recursively_for_supported_types_in_name_order(tmp_path):
    root = tmp_path / "scans"
    for name in ["b.pdf", "a.PNG", "sub/d.TIFF", "sub/c.jpeg", "notes.txt", "sub/.hidden.png", ".git/x.pdf",
                 "sub/e.Jpg", "f.webp", "g.bmp", "h.gif", "i.tif"]:
        touch(root / name)
    sources = expand_inputs([str(root)], None)
    assert [str(s.relative) for s in sources] == ["a.PNG", "b.pdf", "f.webp", "g.bmp", "h.gif", "i.tif",
                                                  "sub/c.jpeg", "sub/d.TIFF", "sub/e.Jpg"]
    assert all(s.root == root and s.error is None and s.path == root / s.relative for s in sources)


def test_files_named_directly_are_kept_whatever_their_type(tmp_path):
    notes = touch(tmp_path / "deep" / "notes.txt")
    [source] = expand_inputs([str(notes)], None)
    assert (source.path, source.relative, source.root) == (notes, PurePath("notes.txt"), None)
    assert source.error is None


def test_dash_reads_paths_from_stdin_in_place(tmp_path):
    first, second, third = (touch(tmp_path / name) for name in ("1.png", "2.png", "3.png"))
    folder = tmp_path / "more"
    touch(folder / "4.pdf")
    stdin = io.StringIO(f"  {second}  \n\n   \n{folder}\n")
    sources = expand_inputs([str(first), "-", str(third)], stdin)
    assert [s.path for s in sources] == [first, second, folder / "4.pdf", third]


def test_dash_without_stdin_is_a_usage_error():
    with pytest.raises(DsocrError, match="standard input"):
        expand_inputs(["-"], None)


def test_missing_paths_and_empty_folders_become_sources_with_errors(tmp_path):
    good = touch(tmp_path / "good.png")
    (tmp_path / "empty").mkdir()
    sources = expand_inputs([str(tmp_path / "gone.pdf"), str(good), str(tmp_path / "empty")], None)
    assert [(s.path.name, s.error is None) for s in sources] == [("gone.pdf", False), ("good.png", True),
                                                                 ("empty", False)]
    assert "no such file" in sources[0].error and "no supported files" in sources[2].error
    with pytest.raises(DocumentError, match="no such file"):
        open_document(sources[0])


def test_each_file_is_read_once(tmp_path):
    page = touch(tmp_path / "a.png")
    assert len(expand_inputs([str(page), str(tmp_path), str(tmp_path / "." / "a.png")], None)) == 1


def test_skipped_folders_are_not_searched(tmp_path):
    touch(tmp_path / "in.png")
    touch(tmp_path / "out" / "in_images" / "p1_fig1.png")
    names = [s.path.name for s in expand_inputs([str(tmp_path)], None, skip=[tmp_path / "out"])]
    assert names == ["in.png"]


# --- PDFs -----------------------------------------------------------------------------------------

def test_pdf_pages_render_lazily_at_the_requested_dpi(tmp_path, monkeypatch):
    rendered = []
    get_pixmap = pymupdf.Page.get_pixmap
    monkeypatch.setattr(pymupdf.Page, "get_pixmap",
                        lambda page, **kw: rendered.append(page.number) or get_pixmap(page, **kw))
    document = open_document(expand_inputs([str(make_pdf(tmp_path / "doc.pdf", pages=4))], None)[0])
    assert (document.kind, document.page_count, rendered) == ("pdf", 4, [])
    pages = rendered_pages(document)
    assert inspect.isgenerator(pages)
    first = next(pages)
    assert rendered == [0]  # one page rendered, not the document
    assert (first.number, first.size, first.image.mode, stripe_width(first)) == (1, (400, 200), "RGB", 1)
    assert [stripe_width(page) for page in pages] == [2, 3, 4]
    low = next(rendered_pages(open_document(document.source, dpi=72)))
    assert low.size == (200, 100) and stripe_width(low, dpi=72) == 1


def test_pdf_pages_are_the_pixels_of_the_official_rendering(tmp_path):
    """The official PDF script: zoom dpi/72, no alpha, pixmap -> PNG -> Pillow."""
    path = make_pdf(tmp_path / "doc.pdf", sizes=[(200, 100), (150, 300)])
    pdf = pymupdf.open(path)
    for page in rendered_pages(open_document(expand_inputs([str(path)], None)[0])):
        pixmap = pdf[page.number - 1].get_pixmap(matrix=pymupdf.Matrix(2, 2), alpha=False)
        with Image.open(io.BytesIO(pixmap.tobytes("png"))) as official:
            assert page.image.tobytes() == official.convert("RGB").tobytes()


def test_page_selection_renders_only_the_selected_pages(tmp_path):
    document = open_document(expand_inputs([str(make_pdf(tmp_path / "doc.pdf", pages=5))], None)[0])
    assert [(p.number, stripe_width(p)) for p in rendered_pages(document, [2, 5])] == [(2, 2), (5, 5)]
    with pytest.raises(ValueError):
        list(rendered_pages(document, [6]))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_memory_stays_flat_over_a_long_pdf(tmp_path):
    """40 pages of 2000 x 2000 px are 480 MB as RGB: the iteration must hold one at a time."""
    document = open_document(expand_inputs([str(make_pdf(tmp_path / "long.pdf", pages=40, size=(1000, 1000)))],
                                           None)[0])

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    pages = rendered_pages(document)
    next(pages)
    baseline, peak = resident(), 0
    for page in pages:
        assert page.size == (2000, 2000)
        peak = max(peak, resident())
    assert peak - baseline < 150e6


def test_page_refs_pickle_and_render_the_same_page(tmp_path):
    document = open_document(expand_inputs([str(make_pdf(tmp_path / "doc.pdf"))], None)[0])
    ref = pickle.loads(pickle.dumps(document.page_ref(2)))
    assert ref().tobytes() == list(rendered_pages(document, [2]))[0].image.tobytes()


def test_broken_pdfs_are_document_errors(tmp_path):
    def error_for(path: Path) -> str:
        with pytest.raises(DocumentError) as caught:
            open_document(expand_inputs([str(path)], None)[0])
        return str(caught.value)

    assert "cannot open this PDF" in error_for(touch(tmp_path / "junk.pdf", b"this is not a pdf"))
    pymupdf.open(make_pdf(tmp_path / "plain.pdf")).save(
        tmp_path / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    assert "password" in error_for(tmp_path / "locked.pdf")
    empty = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
             b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
    assert "no pages" in error_for(touch(tmp_path / "empty.pdf", empty))


def test_a_pdf_with_only_an_owner_password_opens(tmp_path):
    pymupdf.open(make_pdf(tmp_path / "plain.pdf")).save(
        tmp_path / "restricted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", permissions=0)
    document = open_document(expand_inputs([str(tmp_path / "restricted.pdf")], None)[0])
    assert [stripe_width(p) for p in rendered_pages(document)] == [1, 2, 3]


def test_mupdf_prints_nothing_while_repairing_a_damaged_pdf(tmp_path):
    whole = make_pdf(tmp_path / "whole.pdf").read_bytes()
    cut = touch(tmp_path / "cut.pdf", whole[:len(whole) // 2])  # MuPDF repairs it, and would say so
    script = ("import sys; from dsocr_cli.documents import expand_inputs, open_document; "
              "d = open_document(expand_inputs(sys.argv[1:], None)[0]); "
              "assert len([d.page_ref(n)() for n in range(1, d.page_count + 1)]) == 3")
    done = subprocess.run([sys.executable, "-c", script, str(cut)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_huge_pdf_page_fails_alone_without_being_rendered(tmp_path):
    path = make_pdf(tmp_path / "poster.pdf", sizes=[(200, 100), (14400, 14400), (200, 100)])
    items = list(rendered_pages(open_document(expand_inputs([str(path)], None)[0])))
    assert [item.reason is None for item in items] == [True, False, True]
    assert items[1].number == 2
    assert "28800 x 28800 px" in items[1].reason and "dpi" in items[1].reason


# --- images ---------------------------------------------------------------------------------------

def rgba_clear() -> Image.Image:
    return Image.new("RGBA", (8, 8), (0, 0, 0, 0))


def grey_with_trns() -> Image.Image:
    image = Image.new("L", (8, 8), 0)
    image.info["transparency"] = 0
    return image


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([255, 255, 255, 200, 0, 0])
    image.info["transparency"] = 0
    return image


IMAGES = [  # (file name, image, save options, expected RGB of pixel (0, 0))
    ("rgb.png", Image.new("RGB", (8, 8), (10, 200, 30)), {}, (10, 200, 30)),
    ("clear.png", rgba_clear(), {}, (255, 255, 255)),
    ("grey-alpha.png", Image.new("LA", (8, 8), (0, 0)), {}, (255, 255, 255)),
    ("grey-trns.png", grey_with_trns(), {}, (255, 255, 255)),
    ("palette.gif", palette_with_transparency(), {}, (200, 0, 0)),
    ("deep.png", Image.fromarray(np.full((8, 8), 257 * 40, np.uint16)), {}, (40, 40, 40)),
    ("dark-deep.png", Image.fromarray(np.full((8, 8), 200, np.uint16)), {}, (1, 1, 1)),
    ("float.tif", Image.fromarray(np.full((8, 8), 0.5, np.float32)), {}, (128, 128, 128)),
    ("cmyk.jpg", Image.new("CMYK", (8, 8), (0, 0, 0, 0)), {"quality": 95}, (255, 255, 255)),
    ("bits.bmp", Image.new("1", (8, 8), 0), {}, (0, 0, 0)),
    ("clear.webp", rgba_clear(), {"lossless": True}, (255, 255, 255)),
    ("grey.tiff", Image.new("L", (8, 8), 90), {}, (90, 90, 90)),
]


@pytest.mark.parametrize("name,image,options,expected", IMAGES, ids=[case[0] for case in IMAGES])
def test_images_of_every_mode_become_rgb_pages(tmp_path, name, image, options, expected):
    image.save(tmp_path / name, **options)
    page = only_page(tmp_path / name)
    assert (page.number, page.image.mode, page.size) == (1, "RGB", (8, 8))
    assert np.abs(np.subtract(page.image.getpixel((0, 0)), expected)).max() <= 2


def test_every_tiff_frame_is_a_page(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (10 * k, 8), colour) for k, colour in enumerate(colours, 1)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    document = open_document(expand_inputs([str(tmp_path / "stack.tif")], None)[0])
    assert (document.kind, document.page_count) == ("image", 3)
    assert [(p.number, p.size, p.image.getpixel((0, 0))) for p in rendered_pages(document, [1, 3])] == [
        (1, (10, 8), (255, 0, 0)), (3, (30, 8), (0, 0, 255))]


def test_an_animated_gif_is_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    document = open_document(expand_inputs([str(tmp_path / "anim.gif")], None)[0])
    assert document.page_count == 1
    assert next(rendered_pages(document)).image.getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 30), "white")
    image.paste((0, 0, 0), (0, 0, 30, 30))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    page = only_page(tmp_path / "phone.jpg")
    assert page.size == (30, 60)
    assert page.image.getpixel((15, 5))[0] < 30 and page.image.getpixel((15, 55))[0] > 225


def test_oversized_images_and_decompression_bombs_are_page_failures(tmp_path):
    assert "decompression bomb" in only_page(png_header_only(tmp_path / "bomb.png", 20000, 20000)).reason
    assert "100 MP limit" in only_page(png_header_only(tmp_path / "big.png", 12000, 12000)).reason
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    source = expand_inputs([str(tmp_path / "small.png")], None)[0]
    [failure] = rendered_pages(open_document(source, max_pixels=1000))
    assert "40 x 30 px" in failure.reason and "0.001 MP limit" in failure.reason


def test_a_truncated_image_is_a_page_failure(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    failure = only_page(touch(tmp_path / "cut.png", data[:len(data) // 2]))
    assert failure.image is None and failure.reason


def test_file_types_are_recognised_by_content_when_the_extension_is_unknown(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "scan.dat", format="PNG")
    make_pdf(tmp_path / "doc.pdf").rename(tmp_path / "doc.bin")
    given = expand_inputs([str(tmp_path / "scan.dat"), str(tmp_path / "doc.bin")], None)
    kinds = [open_document(source).kind for source in given]
    assert kinds == ["image", "pdf"]
    with pytest.raises(DocumentError, match="unsupported file type"):
        open_document(Source(touch(tmp_path / "notes.txt", b"hello"), PurePath("notes.txt")))
    with pytest.raises(DocumentError, match="cannot open this image"):
        open_document(Source(touch(tmp_path / "fake.png", b"hello"), PurePath("fake.png")))


# --- parse_pages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,count,pages", [
    ("1-3,7,10-", 12, [1, 2, 3, 7, 10, 11, 12]),
    ("7, 2-3 ,3,1", 9, [1, 2, 3, 7]),
    ("-2,5", 6, [1, 2, 5]),
    ("1-5", 3, [1, 2, 3]),   # pages past the end are left out...
    ("4-", 3, []),           # ...which can leave none
    ("2", 0, []),            # page_count 0 only checks the syntax
])
def test_page_specs(spec, count, pages):
    assert parse_pages(spec, count) == pages


@pytest.mark.parametrize("spec", ["", "1,,2", "a", "1-2-3", "-", "0", "0-2", "3-1", "1.5", "+2"])
def test_bad_page_specs_are_clear_errors(spec):
    with pytest.raises(DsocrError, match="--pages"):
        parse_pages(spec, 10)
