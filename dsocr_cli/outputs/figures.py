"""Figure crops: TARGET_images/p{page}_fig{k}.png, as the Markdown links them."""
from __future__ import annotations

from ..writers import save_image
from .document import RenderedDocument


def write_figures(doc: RenderedDocument) -> None:
    folder = doc.job.target.figures
    for number, rendered in doc.rendered.items():
        for figure in rendered.figures:
            if figure.image is not None:
                save_image(folder / figure.name, figure.image)
            elif not (folder / figure.name).is_file():
                doc.report.problems.append(f"page {number}: {figure.name} not cropped (no page image)")
