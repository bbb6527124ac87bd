"""`dsocr parse-chart IMAGES...`: a chart's data as CSV, JSON or a Markdown table."""
from __future__ import annotations

from typing import Annotated

import typer

from .. import prompts
from ..charts import parse_chart as read_chart, to_csv, to_json, to_markdown
from ..errors import DsocrError
from .batch import Answer, Batch, FromRawOpt, ImagesArg, OutputOpt, Reading
from .common import PromptFileOpt, resolve_prompt
from .options import READING, ModelChoice, model_options


@model_options(*READING)
def parse_chart(
    choice: ModelChoice,
    images: ImagesArg = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="RFC 4180 CSV, units in the column names (the default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: title, columns, units, rows, problems, raw output.")] = False,
    as_md: Annotated[bool, typer.Option("--md", help="A Markdown table of the cells as written.")] = False,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    prompt_file: PromptFileOpt = None,
) -> None:
    """Read a chart's data table: numbers parsed, units kept, one column per series (prompt: parse-figure).

    An image without a table fails (exit 1); with --json its record keeps the raw output.
    """
    if as_csv + as_json + as_md > 1:
        raise DsocrError("give one of --csv, --json and --md")
    batch = Batch(images, from_raw, output, ".json" if as_json else ".md" if as_md else ".csv")
    batch.read(resolve_prompt(None, prompt_file, prompts.PARSE_FIGURE), choice)
    batch.emit(lambda reading: chart_answer(reading, as_md), as_json)


def chart_answer(reading: Reading, as_md: bool) -> Answer:
    chart = read_chart(reading.raw)
    if chart is None:
        return Answer(error="no table found in the model output", record={"error": "no table found", "raw": reading.raw})
    text = to_markdown(chart) + "\n" if as_md else to_csv(chart)
    return Answer(text, to_json(chart), notes=chart.problems)
