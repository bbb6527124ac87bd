"""--annotate: the pages with their layout boxes drawn; a PDF for a PDF, PNGs for an image input."""
from __future__ import annotations

from ..annotate import annotation_pdf
from ..writers import save_image, write_atomic
from .document import RenderedDocument


def write_annotation(doc: RenderedDocument) -> None:
    if not (doc.options.annotate and doc.drawings):
        return
    path = doc.job.target.annotation
    if doc.job.document is not None and doc.job.document.kind == "image":
        if len(doc.drawings) == 1:
            save_image(path.with_suffix(".png"), doc.drawings[0][1])
        else:
            for number, drawing in doc.drawings:
                save_image(path.with_name(f"{path.stem}_p{number}.png"), drawing)
    else:
        write_atomic(path, annotation_pdf([drawing for _, drawing in doc.drawings], doc.options.dpi))
