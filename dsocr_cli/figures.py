"""A figure read a second time (`dsocr convert --parse-figures`): what the parse-figure prompt gave.

A chart becomes its data table, a chemical structure its RDKit-checked SMILES (an invalid one is
flagged, never shown as a molecule), anything else its text, used as the figure's alt text.
Pure: raw output in, a reading and its Markdown out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .charts import ChartTable, parse_chart, to_markdown
from .chem import ChemError, Molecule, extract_smiles, is_bare_smiles, validate_smiles
from .grounding import strip_grounding
from .markdown import FigureNote

# The model answers a structure with the SMILES alone, or marks it: a tag, a fence, a label.
_MARKED_SMILES = re.compile(r"<smiles>|```|\bSMILES\b", re.I)


@dataclass(frozen=True)
class FigureReading:
    kind: str                           # chart | chemistry | text
    text: str                           # the output without grounding tags
    chart: ChartTable | None = None
    molecule: Molecule | None = None
    smiles_error: str | None = None     # chemistry RDKit rejected: its reason, with the SMILES


def read_figure(raw: str) -> FigureReading:
    """What the figure is, judged from the output alone: a table wins, then a SMILES the output
    marks as one or consists of (a word needs structure characters or five atoms: "CNN", "OK" and
    "Logo" are labels); prose that happens to contain a SMILES-like word stays text."""
    text = strip_grounding(raw)
    chart = parse_chart(raw)
    if chart is not None:
        return FigureReading("chart", text, chart=chart)
    smiles = extract_smiles(raw)
    bare = len(text.split()) == 1 and smiles is not None and is_bare_smiles(smiles)
    if smiles is None or not (bare or _MARKED_SMILES.search(raw)):
        return FigureReading("text", text)
    try:
        return FigureReading("chemistry", text, molecule=validate_smiles(smiles))
    except ChemError as exc:
        return FigureReading("chemistry", text, smiles_error=str(exc))


def figure_markdown(reading: FigureReading) -> FigureNote:
    """Markdown under the figure (a table, a SMILES, or a flag) or, for other images, alt text."""
    if reading.chart is not None:
        return FigureNote(below=to_markdown(reading.chart))
    if reading.molecule is not None:
        return FigureNote(below=f"SMILES: {_code(reading.molecule.canonical_smiles)}")
    if reading.smiles_error is not None:
        return FigureNote(below=f"*Structure not verified:* {_code(reading.smiles_error)}")
    return FigureNote(alt=" ".join(reading.text.split()) or None)


def _code(text: str) -> str:
    """A Markdown code span that holds any text, backticks included."""
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
