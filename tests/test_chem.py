"""Chemistry: the SMILES in the model's answer, checked by RDKit, drawn; RDKit's errors as one line."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from rdkit import Chem

from dsocr_cli.chem import ChemError, Molecule, draw_molecule, extract_smiles, validate_smiles
from dsocr_cli.errors import DsocrError

DEEP = Path(__file__).resolve().parent.parent / "fixtures" / "deep"


def output(name: str) -> str:
    return (DEEP / name).read_text(encoding="utf-8")


def rdkit_canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize("name, smiles", [
    ("chem-bare-stereo.txt", "CC(C)Cc1ccc([C@H](C)C(=O)O)cc1"),
    ("chem-tagged-charges.txt", "[NH3+]CC(=O)[O-]"),
    ("chem-fenced.txt", "c1ccc(/C=C/c2ccccc2)cc1"),
    ("chem-labelled.txt", "Cn1c(=O)c2c(ncn2C)n(C)c1=O"),
    ("chem-several.txt", "CC(=O)Oc1ccccc1C(=O)O"),       # the larger valid one of CCO and aspirin
    ("chem-bad-valence.txt", "CC(C)(C)(C)(C)C"),
    ("chem-unclosed-ring.txt", "C1CCC(CC)C"),
    ("chem-truncated.txt", "C1=CC=C(C=C1)C(=O"),
    ("chem-garbage.txt", "Xq#%%"),
    ("chem-none.txt", None),
])
def test_extract_smiles_from_recorded_outputs(name, smiles):
    assert extract_smiles(output(name)) == smiles


@pytest.mark.parametrize("raw, smiles", [
    ("The molecule is ethanol: CCO.", "CCO"),
    ("(SMILES: CCN)", "CCN"),
    ("**SMILES**: `[NH4+].[Cl-]`", "[NH4+].[Cl-]"),
    ("SMILES string = 'OC1CCCCC1'", "OC1CCCCC1"),
    ("```CCO```", "CCO"),
    ("<SMILES>CCO", "CCO"),                               # unterminated tag
    ("Compound 12 (2-methylpropane) is CC(C)C here", "CC(C)C"),
    ("Candidates: CC, CCO and c1ccccc1 (benzene)", "c1ccccc1"),
    ("I see ON the page", None),                          # words that RDKit would read are not SMILES
    ("Figure 1. A molecule", None),
    ("", None),
])
def test_extract_smiles_from_text_around_it(raw, smiles):
    assert extract_smiles(raw) == smiles


def test_extract_never_returns_text_that_is_not_in_the_output():
    for name in sorted(DEEP.glob("chem-*.txt")):
        found = extract_smiles(name.read_text(encoding="utf-8"))
        assert found is None or found in name.read_text(encoding="utf-8")


def test_stereo_is_kept_and_canonical_matches_rdkit_for_another_written_form():
    mol = validate_smiles(extract_smiles(output("chem-bare-stereo.txt")))
    assert mol.canonical_smiles == rdkit_canonical("C[C@@H](C1=CC=C(C=C1)CC(C)C)C(=O)O")   # (S)-ibuprofen, Kekulé
    assert "@" in mol.canonical_smiles
    assert mol.formula == "C13H18O2" and mol.exact_mass == pytest.approx(206.1307, abs=1e-4)
    assert mol.inchi.endswith("/t10-/m0/s1") and mol.inchikey == "HEFNNWSXXWATRW-JTQLQIEISA-N"
    other = validate_smiles("CC(C)Cc1ccc([C@@H](C)C(=O)O)cc1")
    assert other.canonical_smiles != mol.canonical_smiles and other.inchikey != mol.inchikey


def test_double_bond_geometry_and_charges_are_kept():
    stilbene = validate_smiles("c1ccc(/C=C/c2ccccc2)cc1")
    assert stilbene.canonical_smiles == rdkit_canonical("C(=C/c1ccccc1)\\c1ccccc1")
    assert "/b" in stilbene.inchi and stilbene.canonical_smiles != validate_smiles("c1ccc(/C=C\\c2ccccc2)cc1").canonical_smiles
    glycine = validate_smiles(extract_smiles(output("chem-tagged-charges.txt")))
    assert glycine.canonical_smiles == rdkit_canonical("[O-]C(=O)C[NH3+]")
    assert "+" in glycine.canonical_smiles and "-" in glycine.canonical_smiles
    assert glycine.formula == "C2H5NO2"


def test_molecule_fields_for_a_known_compound():
    assert validate_smiles("OCC") == Molecule(
        canonical_smiles="CCO", formula="C2H6O", exact_mass=pytest.approx(46.041865, abs=1e-6),
        inchi="InChI=1S/C2H6O/c1-2-3/h3H,2H2,1H3", inchikey="LFQSCWFLJHTTHZ-UHFFFAOYSA-N", input_smiles="OCC")


def test_a_molecule_inchi_cannot_express_gets_none():
    mol = validate_smiles("*CC")
    assert mol.canonical_smiles == "*CC" and mol.inchi is None and mol.inchikey is None


@pytest.mark.parametrize("smiles, message", [
    ("CC(C)(C)(C)(C)C", "invalid SMILES 'CC(C)(C)(C)(C)C': Explicit valence for atom # 1 C, 6, is greater than permitted"),
    ("C1CCC(CC)C", "invalid SMILES 'C1CCC(CC)C': unclosed ring for input: 'C1CCC(CC)C'"),
    ("c1cccc1", "invalid SMILES 'c1cccc1': Can't kekulize mol. Unkekulized atoms: 0 1 2 3 4"),
    ("C1=CC=C(C=C1)C(=O", "invalid SMILES 'C1=CC=C(C=C1)C(=O': extra open parentheses while parsing: "
                          "C1=CC=C(C=C1)C(=O; check for mistakes around position 15"),
    ("Xq#%%", "invalid SMILES 'Xq#%%': syntax error while parsing: Xq#%%; check for mistakes around position 1"),
    ("", "no SMILES to check: the output is empty"),
    ("CCO CCC", "SMILES 'CCO CCC' contains whitespace"),
])
def test_invalid_smiles_give_rdkits_reason_in_one_line(smiles, message):
    with pytest.raises(ChemError) as info:
        validate_smiles(smiles)
    assert str(info.value) == message and isinstance(info.value, DsocrError)


def test_rdkit_messages_are_captured_not_printed(capfd):
    for smiles in ("C1CC", "c1cccc1", "CC(C)(C)(C)(C)C", "*CC", "CC=CC"):   # parse, kekulize, valence, InChI
        try:
            validate_smiles(smiles)
        except ChemError:
            pass
    extract_smiles("no cOn ring C1CC (SMILES maybe) c1cccc1")
    assert capfd.readouterr() == ("", "")


def test_long_input_is_shortened_in_the_message():
    with pytest.raises(ChemError) as info:
        validate_smiles("C" * 300 + "(")
    assert len(str(info.value)) < 300 and "position 301" in str(info.value)


def test_draw_svg_and_png():
    mol = validate_smiles("CC(=O)Oc1ccccc1C(=O)O")
    svg = draw_molecule(mol)
    assert svg.startswith(b"<?xml") and b"<svg" in svg and b"width='400px'" in svg
    png = draw_molecule(mol, "png", size=(320, 200))
    assert Image.open(io.BytesIO(png)).size == (320, 200)


@pytest.mark.parametrize("fmt, size", [("jpg", (400, 300)), ("svg", (0, 300))])
def test_draw_rejects_unknown_format_and_empty_size(fmt, size):
    with pytest.raises(ChemError):
        draw_molecule(validate_smiles("CCO"), fmt, size)


def test_the_command_line_starts_without_rdkit_drawing():
    """RDKit's drawing needs X11 libraries that headless servers often lack: only --draw may need it."""
    import subprocess
    import sys
    code = "import sys, dsocr_cli.cli; sys.exit('rdkit.Chem.Draw' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
