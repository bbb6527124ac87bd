"""A chemical structure as the model parses it ("Parse the figure.") -> a checked molecule.

The model was trained on PubChem SMILES drawn by RDKit and answers with the SMILES, bare or
with text, tags or a code fence around it. RDKit parses and sanitizes the candidate; its own
message (captured, never printed) becomes the one-line error.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from .errors import DsocrError


class _OnFirstUse:
    """A module imported when first used: RDKit takes ~0.5 s to import, and only a SMILES needs it."""
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


Chem, rdBase = _OnFirstUse("rdkit.Chem"), _OnFirstUse("rdkit.rdBase")
Descriptors, rdMolDescriptors = _OnFirstUse("rdkit.Chem.Descriptors"), _OnFirstUse("rdkit.Chem.rdMolDescriptors")

_TAGGED = re.compile(r"<smiles>(.*?)(?:</smiles>|$)", re.S | re.I)
_FENCED = re.compile(r"```(?:[\w-]*\n)?(.*?)(?:```|$)", re.S)
_LABELLED = re.compile(r"\bSMILES\b(?:\s+(?:string|notation|code))?\s*(?:[:：=]|\bis\b)\s*(\S+)", re.I)
_SMILES = re.compile(r"(?=.*[A-Za-z*])[A-Za-z0-9@+\-\[\]()=#$/\\%.:*~]+")
_STRUCTURE = re.compile(r"[\d()\[\]=#@/\\%+\-]")      # characters English words do not have
_BONDS = re.compile(r"[()\[\]=#]")                   # branches, bracket atoms, double and triple bonds
_WRAPPERS = "\"'`“”‘’<>,;:!?"
_LOG_TIME = re.compile(r"^\[\d\d:\d\d:\d\d\]\s?")
DRAW_FORMATS = ("svg", "png")
# RDKit cannot be interrupted mid-call, so its time is bounded by size: a drawing of a page-sized
# structure has well under 200 atoms, and 1,000 characters parse, check and draw in under a second;
# a 500-ring or 100,000-atom output would take minutes.
MAX_SMILES_LENGTH = 1000
MAX_ATOMS = 200


class ChemError(DsocrError):
    pass


@dataclass(frozen=True)
class Molecule:
    canonical_smiles: str       # RDKit's canonical isomeric SMILES: stereo and charges kept
    formula: str
    exact_mass: float           # monoisotopic mass
    inchi: str | None           # None where InChI cannot say it (e.g. "*" atoms)
    inchikey: str | None
    input_smiles: str


def extract_smiles(raw: str) -> str | None:
    """The SMILES the output gives, or None; only ever a piece of the output, never made up.

    Where the model said it (a <smiles> tag, a code fence, "SMILES: ...") wins over bare tokens,
    so a broken SMILES there reaches validate_smiles and its error; in prose, a token counts only
    if RDKit can read it. Among several candidates the most plausible is chosen: valid, then
    readable, then most atoms."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", raw)
    tagged = [t for m in _TAGGED.finditer(text) for t in m.group(1).split()]
    fenced = [t for m in _FENCED.finditer(text) for t in m.group(1).split()]
    labelled = [m.group(1) for m in _LABELLED.finditer(text)]
    words = text.split()
    for tier in (tagged, fenced, labelled, words if len(words) == 1 else []):
        candidates = [c for c in map(_unwrap, tier) if _SMILES.fullmatch(c)]
        if candidates:
            return max(candidates, key=_plausibility)
    in_prose = [w for w in map(_unwrap, words) if _SMILES.fullmatch(w) and _readable_in_prose(w)]
    return max(in_prose, key=_plausibility) if in_prose else None


def _unwrap(token: str) -> str:
    """A token without quotes, brackets or sentence punctuation around it."""
    token = token.strip(_WRAPPERS).rstrip(".")
    if token.startswith("(") and token.count("(") > token.count(")"):
        token = token[1:]
    if token.endswith(")") and token.count(")") > token.count("("):
        token = token[:-1]
    return token.strip(_WRAPPERS)


def _plausibility(smiles: str) -> tuple[bool, bool, int]:
    """(sanitizes, parses, atom count): how likely a candidate is the molecule meant."""
    if len(smiles) > MAX_SMILES_LENGTH:
        return False, False, 0
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        valid = mol is not None and Chem.SanitizeMol(mol, catchErrors=True) == Chem.SanitizeFlags.SANITIZE_NONE
    return valid, mol is not None, mol.GetNumAtoms() if mol is not None else 0


def _readable_in_prose(token: str) -> bool:
    """Words such as "ON" or "I" read as SMILES too: letters-only tokens need three valid atoms."""
    return _reads_as_smiles(token, min_letter_atoms=3)


def is_bare_smiles(token: str) -> bool:
    """Whether a word standing alone is a SMILES and not a word or label ("CNN", "OK", "Logo",
    "H2O"): structure characters RDKit can read, letters only that make a valid molecule of 5+
    atoms, or a broken SMILES that still has its shape (6+ characters with branches or bonds)."""
    return _reads_as_smiles(token, min_letter_atoms=5) or (len(token) >= 6 and _BONDS.search(token) is not None)


def _reads_as_smiles(token: str, min_letter_atoms: int) -> bool:
    valid, parses, atoms = _plausibility(token)
    return parses if _STRUCTURE.search(token) else valid and atoms >= min_letter_atoms


def validate_smiles(smiles: str) -> Molecule:
    """Parse and sanitize with RDKit; ChemError with RDKit's reason when it fails."""
    text = smiles.strip()
    if not text:
        raise ChemError("no SMILES to check: the output is empty")
    if any(c.isspace() for c in text):
        raise ChemError(f"SMILES {_short(text)} contains whitespace")
    mol = _parse(text)
    with rdBase.BlockLogs():
        inchi = Chem.MolToInchi(mol) or None
        inchikey = Chem.InchiToInchiKey(inchi) if inchi else None
    return Molecule(Chem.MolToSmiles(mol), rdMolDescriptors.CalcMolFormula(mol), Descriptors.ExactMolWt(mol),
                    inchi, inchikey, smiles)


def _parse(smiles: str) -> Chem.Mol:
    """RDKit's default reading (parse, sanitize, stereo perception); its first error otherwise.
    Too long or too many atoms is an error too, found before the costly steps run."""
    if len(smiles) > MAX_SMILES_LENGTH:
        raise ChemError(f"SMILES {_short(smiles)} is {len(smiles):,} characters long; "
                        f"dsocr checks at most {MAX_SMILES_LENGTH:,}")
    with rdBase.BlockLogs():
        bare = Chem.MolFromSmiles(smiles, sanitize=False)
    if bare is not None and bare.GetNumAtoms() > MAX_ATOMS:
        raise ChemError(f"SMILES {_short(smiles)} has {bare.GetNumAtoms():,} atoms; dsocr checks at most {MAX_ATOMS}")
    with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as log:
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ChemError(f"invalid SMILES {_short(smiles)}: {_reason(log.messages)}")
    if mol.GetNumAtoms() == 0:
        raise ChemError(f"SMILES {_short(smiles)} has no atoms")
    return mol


def _reason(messages: str) -> str:
    """RDKit's first complaint on one line, with where it is when RDKit says so."""
    lines = [" ".join(_LOG_TIME.sub("", line).split()) for line in messages.splitlines()]
    lines = [line.removeprefix("SMILES Parse Error:").strip() for line in lines if line]
    where = next((line.rstrip(":") for line in lines if line.startswith("check for mistakes")), None)
    reason = lines[0] if lines else "RDKit could not read it"
    reason = reason if len(reason) <= 160 else reason[:160] + "…"
    return f"{reason}; {where}" if where else reason


def _short(smiles: str, limit: int = 60) -> str:
    return repr(smiles if len(smiles) <= limit else smiles[:limit] + "…")


def draw_molecule(molecule: Molecule, fmt: str = "svg", size: tuple[int, int] = (400, 300)) -> bytes:
    """The structure drawn by RDKit: SVG text (UTF-8) or PNG bytes."""
    try:  # imported here: RDKit's drawing needs X11 libraries a headless server may lack
        from rdkit.Chem.Draw import rdMolDraw2D
    except ImportError as exc:
        raise ChemError(f"RDKit cannot draw on this machine ({exc})") from None
    width, height = size
    if fmt not in DRAW_FORMATS:
        raise ChemError(f"cannot draw as {fmt!r}: use svg or png")
    if fmt == "png" and not hasattr(rdMolDraw2D, "MolDraw2DCairo"):
        raise ChemError("this RDKit was built without Cairo, so it cannot draw PNG: draw as .svg")
    if width < 1 or height < 1:
        raise ChemError(f"drawing size must be positive, got {width}x{height}")
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height) if fmt == "svg" else rdMolDraw2D.MolDraw2DCairo(width, height)
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, _parse(molecule.canonical_smiles))
    drawer.FinishDrawing()
    drawing = drawer.GetDrawingText()
    return drawing.encode("utf-8") if fmt == "svg" else drawing
