"""UCUM unit conversion for the quantities guidelines compare (ms, mm, %, degrees, mmHg …).

Only commensurable units are converted; an observation in an unknown or
incompatible unit cannot be compared, which the engine reports as
undocumented rather than guessing.
"""

from __future__ import annotations

from decimal import Decimal

# unit code -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, Decimal]] = {
    "ms": ("time", Decimal("0.001")),
    "s": ("time", Decimal(1)),
    "min": ("time", Decimal(60)),
    "h": ("time", Decimal(3600)),
    "d": ("time", Decimal(86400)),
    "wk": ("time", Decimal(604800)),
    "mo": ("time", Decimal("2629800")),  # UCUM mean Julian month
    "a": ("time", Decimal("31557600")),  # UCUM mean Julian year
    "um": ("length", Decimal("0.000001")),
    "mm": ("length", Decimal("0.001")),
    "cm": ("length", Decimal("0.01")),
    "m": ("length", Decimal(1)),
    "%": ("fraction", Decimal("0.01")),
    "1": ("fraction", Decimal(1)),
    "deg": ("angle", Decimal(1)),
    "mm[Hg]": ("pressure", Decimal(1)),
    "kg": ("mass", Decimal(1)),
    "g": ("mass", Decimal("0.001")),
    "{score}": ("score", Decimal(1)),
    "{count}": ("count", Decimal(1)),
}

# Human spellings seen in real data for the same units.
_SYNONYMS = {
    "msec": "ms",
    "millisecond": "ms",
    "milliseconds": "ms",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "millimeter": "mm",
    "millimeters": "mm",
    "percent": "%",
    "degree": "deg",
    "degrees": "deg",
    "°": "deg",
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "weeks": "wk",
    "week": "wk",
    "months": "mo",
    "month": "mo",
    "days": "d",
    "day": "d",
    "years": "a",
    "year": "a",
}


def known_unit(unit: str) -> bool:
    return _canonical(unit) in _UNITS


def _canonical(unit: str | None) -> str | None:
    if unit is None:
        return None
    unit = unit.strip()
    if unit in _UNITS:
        return unit
    return _SYNONYMS.get(unit.lower(), unit)


def convert(value: Decimal, from_unit: str | None, to_unit: str) -> Decimal | None:
    """Convert *value* between commensurable units; None when that is impossible."""
    source = _UNITS.get(_canonical(from_unit) or "")
    target = _UNITS.get(_canonical(to_unit) or "")
    if source is None or target is None or source[0] != target[0]:
        return None
    return value * source[1] / target[1]
