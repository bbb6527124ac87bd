"""`dsocr parse-chem IMAGES...`: a chemical structure as RDKit-validated canonical SMILES."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import prompts
from ..chem import ChemError, DRAW_FORMATS, draw_molecule, extract_smiles, validate_smiles
from ..errors import DsocrError
from ..writers import write_atomic
from .batch import Answer, Batch, FromRawOpt, ImagesArg, OutputOpt, Reading
from .common import PromptFileOpt, resolve_prompt
from .options import READING, ModelChoice, model_options


@model_options(*READING)
def parse_chem(
    choice: ModelChoice,
    images: ImagesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: SMILES, formula, exact mass, InChI, InChIKey, the "
                                                         "SMILES as written and the raw output.")] = False,
    draw: Annotated[Optional[Path], typer.Option(
        "--draw", help="Draw the parsed molecule to mol.svg or mol.png (several images: mol_IMAGE.svg).")] = None,
    output: OutputOpt = None,
    from_raw: FromRawOpt = None,
    prompt_file: PromptFileOpt = None,
) -> None:
    """Read a chemical structure as canonical SMILES, checked by RDKit (prompt: parse-figure).

    A SMILES RDKit cannot read fails (exit 1) with RDKit's reason; no molecule is ever made up.
    """
    draw_format = draw.suffix.lower().lstrip(".") if draw else None
    if draw is not None and draw_format not in DRAW_FORMATS:
        raise DsocrError(f"--draw {draw}: name an .svg or .png file")
    batch = Batch(images, from_raw, output, ".json" if as_json else ".smi")
    drawings = batch.paths_beside(draw)
    batch.read(resolve_prompt(None, prompt_file, prompts.PARSE_FIGURE), choice)
    batch.emit(lambda reading: molecule_answer(reading, drawings.get(reading.name)), as_json)


def molecule_answer(reading: Reading, drawing: Path | None) -> Answer:
    smiles = extract_smiles(reading.raw)
    if smiles is None:
        return Answer(error="no SMILES in the model output", record={"error": "no SMILES found", "raw": reading.raw})
    try:
        molecule = validate_smiles(smiles)
        if drawing is not None:
            write_atomic(drawing, draw_molecule(molecule, drawing.suffix.lower().lstrip(".")))
    except ChemError as exc:
        return Answer(error=str(exc), record={"error": str(exc), "input_smiles": smiles, "raw": reading.raw})
    record = {"smiles": molecule.canonical_smiles, "formula": molecule.formula,
              "exact_mass": round(molecule.exact_mass, 6), "inchi": molecule.inchi, "inchikey": molecule.inchikey,
              "input_smiles": molecule.input_smiles, "raw": reading.raw}
    return Answer(molecule.canonical_smiles + "\n", record)
