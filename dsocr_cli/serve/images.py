"""Images that arrive over HTTP: checked before they are queued, decoded where the engine prepares pages.

An upload is checked cheaply here (a format Pillow knows, its pixel count within the limit, read
from the header only), so a bad image is a 4xx for its own request alone. The full decode happens
in the engine's preprocessing workers: the request carries the compressed bytes and a picklable
decoder, never a 6 MB RGB page.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

from ..documents import IMAGE_FORMATS, _quiet_bombs
from ..preprocess import Mode, modes_for, orient, to_rgb


class BadInput(Exception):
    """The request's own fault: `status` (400, 403, 413, ...) and one line saying what is wrong."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.code = status, code


def mode_named(name, served: Mode) -> Mode:
    """The mode a request names (a mode of the served model's kind), or the server's own."""
    modes = modes_for(served.model_kind)
    if name is None:
        return served
    if not isinstance(name, str) or name not in modes:
        raise BadInput(f"mode {name!r}: use one of {', '.join(modes)}")
    return modes[name]


@dataclass(frozen=True)
class Limits:
    max_body: int = 64 * 1024 ** 2      # bytes of one request body
    max_pixels: int = 40_000_000        # pixels of one image or rendered page
    max_pages: int = 100                # pages of one /v1/convert document
    allow_files: Path | None = None     # folder whose images chat requests may name by path


def decode_page(data: bytes) -> Image.Image:
    """The image as the CLI reads a file: first frame, EXIF orientation applied, RGB."""
    with _quiet_bombs(), Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_rgb(orient(image))


def checked_image(data: bytes, limits: Limits):
    """A picklable callable giving the page (OcrRequest.image), once the header looks sound."""
    try:
        with _quiet_bombs(), Image.open(io.BytesIO(data)) as image:
            width, height, kind = *image.size, image.format
    except Image.DecompressionBombError as exc:
        raise BadInput(f"image too large: {exc}", 413, "image_too_large") from None
    except Exception as exc:
        raise BadInput(f"not an image dsocr can read ({type(exc).__name__}: {' '.join(str(exc).split())})",
                       code="invalid_image") from None
    if kind not in IMAGE_FORMATS:
        raise BadInput(f"unsupported image format {kind} (use PNG, JPEG, TIFF, WebP, BMP or GIF)", code="invalid_image")
    if width * height > limits.max_pixels:
        raise BadInput(f"image is {width} x {height} px ({width * height / 1e6:.1f} MP), over this server's "
                       f"{limits.max_pixels / 1e6:g} MP limit", 413, "image_too_large")
    return partial(decode_page, data)


def image_from_url(url: str, limits: Limits):
    """A chat image part's URL: a data: URL, or (with --allow-files) a path or file:// URL under that folder."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise BadInput("image data URLs must be base64 (data:image/png;base64,...)")
        try:
            return checked_image(base64.b64decode(payload, validate=True), limits)
        except (binascii.Error, ValueError):
            raise BadInput("the image data URL is not valid base64") from None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise BadInput("this server does not fetch URLs: send the image as a data URL (data:image/png;base64,...)")
    if parsed.scheme not in ("", "file"):
        raise BadInput(f"unsupported image URL scheme {parsed.scheme!r} (use a data: URL)")
    return checked_image(_allowed_file(unquote(parsed.path) if parsed.scheme else url, limits).read_bytes(), limits)


def _allowed_file(path: str, limits: Limits) -> Path:
    if limits.allow_files is None:
        raise BadInput("this server reads no files (start it with --allow-files DIR); send a data URL", 403, "forbidden")
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(limits.allow_files))
    if not real.is_relative_to(root):
        raise BadInput(f"{path} is outside the folder this server may read", 403, "forbidden")
    if not real.is_file():
        raise BadInput(f"no such file: {path}", 404, "not_found")
    if real.stat().st_size > limits.max_body:
        raise BadInput(f"{path} is larger than this server's {limits.max_body // 1024 ** 2} MiB limit", 413, "too_large")
    return real
