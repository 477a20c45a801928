"""What the store keeps: one coverage assertion per order, and CDS Hooks card feedback.

Plain frozen dataclasses so the web and CLI layers never touch SQLAlchemy. PHI is kept
minimal on purpose: the EHR's patient id only, never names, never access tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class StoreError(Exception):
    """The database refused or failed an operation.

    Raised ``from`` the SQLAlchemy/Alembic error; the message never carries bound
    parameter values (they may be patient ids), so it is safe to log or return.
    """


@dataclass(frozen=True)
class CoverageAssertionRecord:
    """The coverage assertion given for one order, kept for disputes and audit."""

    assertion_id: str
    created_at: datetime
    hook: str
    hook_instance: str
    service_id: str
    patient_id: str | None
    payer_id: str
    order_reference: str
    order_system: str | None
    order_code: str | None
    policy_id: str | None
    policy_version: str | None
    outcome: str
    covered: str
    pa_needed: str | None
    doc_needed: str | None
    questionnaire: str | None
    missing_items: tuple[str, ...] = ()
    failed_criteria: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedbackRecord:
    """One CDS Hooks feedback entry: what the clinician did with a card."""

    service_id: str
    card_uuid: str
    outcome: str
    outcome_timestamp: datetime
    received_at: datetime
    accepted_suggestions: tuple[str, ...] = ()
    override_reason_system: str | None = None
    override_reason_code: str | None = None
    override_reason_display: str | None = None
    override_comment: str | None = None
