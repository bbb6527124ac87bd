"""A wheel must hold every subpackage: pyproject lists them by hand."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dsocr_cli").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found <= listed
