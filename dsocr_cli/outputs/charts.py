"""Chart tables (--parse-figures with --json): each chart figure's data as TARGET_images/p{page}_fig{k}.csv."""
from __future__ import annotations

from pathlib import PurePath

from ..charts import to_csv
from ..writers import write_atomic
from .document import RenderedDocument


def write_chart_tables(doc: RenderedDocument) -> None:
    if not doc.options.layout_json:
        return
    for readings in doc.readings.values():
        for name, reading in readings.items():
            if reading.chart is not None:
                write_atomic(doc.job.target.figures / PurePath(name).with_suffix(".csv"), to_csv(reading.chart))
