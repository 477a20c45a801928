"""Dates and durations as guidelines use them ("within 6 months", "over at least 6 weeks").

Windows are calendar arithmetic relative to the order date, so "6 months"
before 31 August is 28/29 February, as a reviewer would count it.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone

_DURATION = re.compile(r"^\s*(\d+)\s*(day|days|week|weeks|month|months|year|years)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Duration:
    """A calendar duration: a number of days, weeks, months or years."""

    amount: int
    unit: str  # "day" | "week" | "month" | "year"

    @classmethod
    def parse(cls, text: str) -> "Duration":
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"'{text}' is not a duration like '6 months', '42 days', '3 weeks' or '1 year'")
        unit = match.group(2).lower().rstrip("s")
        return cls(int(match.group(1)), unit)

    def before(self, day: date) -> date:
        """The date this duration before *day*."""
        if self.unit == "day":
            return day - timedelta(days=self.amount)
        if self.unit == "week":
            return day - timedelta(weeks=self.amount)
        months = self.amount * (12 if self.unit == "year" else 1)
        return _add_months(day, -months)

    def after(self, day: date) -> date:
        """The date this duration after *day*."""
        if self.unit == "day":
            return day + timedelta(days=self.amount)
        if self.unit == "week":
            return day + timedelta(weeks=self.amount)
        months = self.amount * (12 if self.unit == "year" else 1)
        return _add_months(day, months)

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"


def _add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def parse_fhir_date(value: object) -> date | None:
    """Read a FHIR date/dateTime (possibly partial: ``2026``, ``2026-05``) as a date.

    Partial dates are read as their first day, the conservative choice for
    "within N months" windows.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 4:
            return date(int(text), 1, 1)
        if len(text) == 7:
            return date(int(text[:4]), int(text[5:7]), 1)
        if len(text) >= 10:
            return date.fromisoformat(text[:10])
    except ValueError:
        return None
    return None


def parse_fhir_moment(value: object) -> tuple[date, datetime | None] | None:
    """A FHIR dateTime as its day and, when it gives a time, the instant (UTC if no offset is given):
    what tells a score taken before a procedure from one taken after it the same day."""
    day = parse_fhir_date(value)
    if day is None:
        return None
    text = str(value).strip()
    if len(text) <= 10:
        return day, None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return day, None
    return day, instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)


def age_on(birth_date: date, day: date) -> int:
    """Completed years of age on *day*."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))
