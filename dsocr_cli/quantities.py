"""A table cell as the model wrote it -> its number and unit ("$3.2M" -> 3.2 and "$M").

Chart data is only useful as numbers, but a reading that is a guess is worse than none: a cell
gets a number only when its text has one unambiguous reading, otherwise it stays text. Units,
currencies and scale words ("M", "bn") are kept beside the number, never applied to it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MISSING = frozenset({"", "-", "--", "—", "–", "n/a", "na", "n.a.", "null", "none", "nan"})

_CODES = "USD|EUR|GBP|JPY|CNY|RMB|CHF|CAD|AUD|NZD|INR|KRW|BRL|RUB|HKD|SGD|SEK|NOK|DKK|ZAR|MXN"
_SYMBOL = r"[A-Z]{0,2}[$€£¥₩₹₽]"                                  # $, US$, R$, €
_CURRENCY = rf"{_SYMBOL}|(?:{_CODES})(?=\s)"                      # a code only before a space: USD 5
_LETTER = r"[^\W\d_]"
_UNIT = rf"%|‰|°?{_LETTER}(?:{_LETTER}|[/.·²³' -]){{0,14}}|°"  # kg, m/s, bn, °C, per cent, USD
_QUANTITY = re.compile(
    rf"(?P<sign>[-+])?\s*(?:(?P<prefix>{_CURRENCY})\s*)?(?P<sign2>[-+])?"
    r"(?P<digits>\d(?:[\d,.' \u00a0\u202f\u2009]*\d)?|\.\d+)(?P<exponent>[eE][-+]?\d+)?"
    rf"(?P<space>\s*)(?P<suffix>{_UNIT})?")
_ORDINALS = {"st", "nd", "rd", "th"}
MAX_CELL = 120          # characters: a longer cell is prose, never a quantity (and bounds the regex work)

_PLAIN = re.compile(r"\d+(?:\.\d+)?|\.\d+")                                   # 1234, 1234.5, .5
_GROUPED_POINT = re.compile(r"[1-9]\d{0,2}(?:([, '])\d{3})(?:\1\d{3})*(?:\.\d+)?")  # 1,234.5  1 234  1'234
_GROUPED_COMMA = re.compile(r"[1-9]\d{0,2}(?:([. '])\d{3})(?:\1\d{3})*,\d+")   # 1.234,5  1 234,5
_DOTTED_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:\.\d{3}){2,}")                # 1.234.567
_DECIMAL_COMMA = re.compile(r"\d+,\d+")                                       # 12,5 (1,234 is grouping)


@dataclass(frozen=True)
class CellValue:
    text: str                           # exactly as the model wrote it
    number: int | float | None = None   # None: text, empty or missing
    unit: str | None = None             # what surrounded the number: "%", "$", "$M", "kg"

    @property
    def missing(self) -> bool:
        """Empty, or a placeholder such as "-", "—" or "N/A"."""
        return self.text.strip().lower() in MISSING


def unit_fits(cell_unit: str | None, column_unit: str | None) -> bool:
    """A cell's unit agrees with its column's: none, the same, or the currency of "$M" or "€bn"."""
    return (cell_unit is None or cell_unit == column_unit
            or (column_unit is not None and column_unit.startswith(cell_unit)
                and re.fullmatch(rf"{_SYMBOL}|{_CODES}", cell_unit) is not None))


def parse_cell(text: str) -> CellValue:
    """The cell's number and unit when its text reads as exactly one quantity."""
    body = text.strip().replace("\u2212", "-")
    if len(body) > MAX_CELL:
        return CellValue(text)
    negate = body.startswith("(") and body.endswith(")")      # accounting negative: (1,234)
    if negate:
        body = body[1:-1].strip()
    match = _QUANTITY.fullmatch(body)
    if not match or body.lower() in MISSING:
        return CellValue(text)
    signs = [s for s in (match["sign"], match["sign2"]) if s]
    suffix = match["suffix"] or ""
    number = _number(match["digits"], match["exponent"])
    if (number is None or len(signs) > 1 or (negate and signs)
            or (not match["space"] and (suffix in _ORDINALS or suffix == "s"))):   # 1st, 1990s
        return CellValue(text)
    if negate or signs == ["-"]:
        number = -number
    unit = (match["prefix"] or "").strip() + suffix.strip()
    return CellValue(text, number, unit or None)


def _number(digits: str, exponent: str | None) -> int | float | None:
    """Digits with grouping separators or a decimal comma -> a number, if only one reading exists."""
    digits = re.sub(r"[\u00a0\u202f\u2009]", " ", digits)
    if _PLAIN.fullmatch(digits):
        plain = digits
    elif _GROUPED_POINT.fullmatch(digits):
        plain = re.sub(r"[, ']", "", digits)
    elif _GROUPED_COMMA.fullmatch(digits):
        plain = re.sub(r"[. ']", "", digits).replace(",", ".")
    elif _DOTTED_THOUSANDS.fullmatch(digits):
        plain = digits.replace(".", "")
    elif _DECIMAL_COMMA.fullmatch(digits):
        plain = digits.replace(",", ".")
    else:
        return None
    if "." in plain or exponent:
        return float(plain + (exponent or ""))
    return int(plain)
