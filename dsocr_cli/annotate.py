"""Pictures of the detected layout: each block's boxes drawn on its page with its reading-order
index and label, one colour per label, line width and lettering scaled to the page so the
drawing reads the same on a thumbnail and on a 300 dpi scan. Pure: images in, image or bytes out.
"""
from __future__ import annotations

import io
import zlib

from PIL import Image, ImageDraw, ImageFont

from .grounding import Block, to_pixels

Colour = tuple[int, int, int]

LABEL_COLOURS: dict[str, Colour] = {
    "title": (214, 39, 40), "sub_title": (255, 127, 14), "text": (31, 119, 180),
    "image": (44, 160, 44), "image_caption": (120, 190, 60),
    "table": (148, 103, 189), "table_caption": (197, 120, 220), "table_footnote": (120, 80, 160),
    "equation": (23, 170, 190),
    "header": (127, 127, 127), "footer": (127, 127, 127), "page_number": (127, 127, 127),
}
OTHER_COLOURS: list[Colour] = [(140, 86, 75), (227, 119, 194), (188, 189, 34), (0, 90, 110), (160, 60, 0)]
FILL_ALPHA = 40


def colour_of(label: str) -> Colour:
    """A fixed colour per known label; unknown labels get a stable one from their name."""
    return LABEL_COLOURS.get(label) or OTHER_COLOURS[zlib.crc32(label.encode()) % len(OTHER_COLOURS)]


def annotate_page(image: Image.Image, blocks: list[Block]) -> Image.Image:
    """A copy of the page with every block's boxes (0..999 grid) drawn and tagged "INDEX LABEL"."""
    page = image.convert("RGBA")
    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale = max(page.size) / 1000
    line = max(2, round(2 * scale))
    font = ImageFont.load_default(size=max(11, round(13 * scale)))
    pad = max(1, round(2 * scale))
    for block in blocks:
        rgb = colour_of(block.label)
        for box in block.boxes:
            x1, y1, x2, y2 = to_pixels(box, *page.size)
            edges = (x1, y1, min(x2, page.width - 1), min(y2, page.height - 1))   # a box at 999 stays visible
            draw.rectangle(edges, fill=rgb + (FILL_ALPHA,), outline=rgb + (255,), width=line)
    for index, block in enumerate(blocks, 1):      # tags last, so no later box paints over them
        if block.boxes:
            _tag(draw, f"{index} {block.label}", to_pixels(block.boxes[0], *page.size), colour_of(block.label),
                 font, pad, page.size)
    return Image.alpha_composite(page, overlay).convert("RGB")


def _tag(draw: ImageDraw.ImageDraw, text: str, box, rgb: Colour, font, pad: int, size: tuple[int, int]) -> None:
    """The tag on a solid patch of the label's colour: above the box if it fits, else inside its top."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    x = max(0, min(box[0], size[0] - width))
    y = box[1] - height if box[1] >= height else box[1]
    draw.rectangle((x, y, x + width, y + height), fill=rgb + (255,))
    dark_text = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(0, 0, 0, 255) if dark_text else (255, 255, 255, 255))


def annotation_pdf(images: list[Image.Image], dpi: float = 144.0) -> bytes:
    """One PDF page per image, sized as the image at `dpi` (the resolution the pages were rendered at)."""
    if not images:
        raise ValueError("annotation_pdf needs at least one page image")
    pages = [im.convert("RGB") for im in images]
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return out.getvalue()
