"""Lenient reading of client JSON: a value of the wrong JSON type reads as absent.

EHRs and test tools send malformed resources (a ``coding`` that is a number, a ``status``
that is a list, an ``entry`` that is an object). Evidence is validated before it counts,
but the code that picks candidates out of the raw JSON runs first and must not fail on them:
a malformed element is treated like a missing one, never as a 500.
"""

from __future__ import annotations

from typing import Any


def as_dict(value: Any) -> dict:
    """*value* if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def dicts(value: Any) -> list[dict]:
    """The objects in a repeating element (a lone object counts as one; anything else as none)."""
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def string(value: Any) -> str | None:
    """*value* if it is a JSON string, else None (so it can be compared and hashed safely)."""
    return value if isinstance(value, str) else None
