"""Find the TrueType fonts that text pages are drawn with.

Pages should look like the paper's Fox pages (typeset documents), so a serif face is preferred,
then a sans face, from the usual places on Linux, macOS and Windows. `--font` overrides the
search. Without any, Pillow's built-in scalable font (Aileron, Latin only) is used, and the
caller says so: pages are still deterministic, only plainer.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from .errors import DsocrError

# Regular, bold and monospace faces, most wanted first; names as the usual packages install them.
SERIF = ["DejaVuSerif.ttf", "LiberationSerif-Regular.ttf", "NotoSerif-Regular.ttf", "FreeSerif.ttf",
         "Times New Roman.ttf", "times.ttf", "Georgia.ttf"]
SANS = ["DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "FreeSans.ttf",
        "Arial.ttf", "arial.ttf", "Helvetica.ttc"]
CJK = ["NotoSerifCJK-Regular.ttc", "NotoSansCJK-Regular.ttc", "wqy-zenhei.ttc", "wqy-microhei.ttc",
       "Songti.ttc", "PingFang.ttc", "msyh.ttc", "simsun.ttc"]
MONO = ["DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "NotoSansMono-Regular.ttf", "FreeMono.ttf",
        "Courier New.ttf", "cour.ttf", "Menlo.ttc"]
BOLD_NAMES = [("-Regular", "-Bold"), ("Regular", "Bold"), (".", "-Bold."), (".", "bd.")]


def font_dirs() -> list[Path]:
    home = Path.home()
    dirs = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), home / ".local/share/fonts", home / ".fonts",
            Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library/Fonts"]
    if sys.platform == "win32":
        dirs.append(Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts")
    return [d for d in dirs if d.is_dir()]


@lru_cache(maxsize=1)
def installed_fonts() -> dict[str, Path]:
    """File name -> path for every font file under the usual font folders (first one wins)."""
    found: dict[str, Path] = {}
    for folder in font_dirs():
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in (".ttf", ".ttc", ".otf"):
                found.setdefault(path.name, path)
    return found


def first_installed(names: list[str]) -> Path | None:
    fonts = installed_fonts()
    return next((fonts[n] for n in names if n in fonts), None)


def bold_sibling(path: Path) -> Path | None:
    """The bold face installed beside a regular one (DejaVuSerif.ttf -> DejaVuSerif-Bold.ttf)."""
    for old, new in BOLD_NAMES:
        candidate = path.with_name(path.name.replace(old, new, 1))
        if candidate != path and candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Typeface:
    """The faces one page set is drawn with; None means Pillow's built-in font."""
    regular: Path | None
    bold: Path | None
    mono: Path | None

    def font(self, style: str, size: int) -> ImageFont.FreeTypeFont:
        path = {"regular": self.regular, "bold": self.bold, "mono": self.mono}[style]
        return _load(str(path) if path else None, size)


@lru_cache(maxsize=64)
def _load(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        font = ImageFont.load_default(size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise DsocrError("no TrueType font found and this Pillow lacks FreeType; pass --font PATH.ttf")
        return font
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise DsocrError(f"cannot load font {path}: {exc}") from None


def find_typeface(font: Path | None = None, cjk: bool = False) -> Typeface:
    """--font if given (its bold sibling for headings), else the first installed serif or sans face
    (a CJK-capable one first when the text needs it), else Pillow's built-in font."""
    if font is not None:
        if not font.is_file():
            raise DsocrError(f"no such font file: {font}")
        _load(str(font), 12)
        regular = font
    else:
        regular = first_installed((CJK if cjk else []) + SERIF + SANS)
    mono = first_installed(MONO) if font is None else None
    bold = bold_sibling(regular) if regular else None
    return Typeface(regular, bold or regular, mono or regular)
