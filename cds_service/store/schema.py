"""Table definitions the queries are built from.

The database itself is created by the Alembic revisions in ``migrations/versions`` (never
from this metadata); a test checks that both agree. Column names equal the record field
names so rows map straight onto the dataclasses.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on both backends.

    SQLite has no time zones and PostgreSQL answers in the session's zone, so values are
    normalised to UTC on the way in and tagged/converted to UTC on the way out. Naive
    datetimes are refused: their meaning would depend on the host's clock settings.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime: the store only accepts timezone-aware datetimes")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class JSONTuple(sa.TypeDecorator[tuple[str, ...]]):
    """A tuple of strings kept as JSON text, which reads the same on SQLite and PostgreSQL."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str:
        return json.dumps(list(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...]:
        return tuple(json.loads(value)) if value is not None else ()


metadata = sa.MetaData()

coverage_assertion = sa.Table(
    "coverage_assertion",
    metadata,
    sa.Column("assertion_id", sa.Text, primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("hook", sa.Text, nullable=False),
    sa.Column("hook_instance", sa.Text, nullable=False),
    sa.Column("service_id", sa.Text, nullable=False),
    sa.Column("patient_id", sa.Text),
    sa.Column("payer_id", sa.Text, nullable=False),
    sa.Column("order_reference", sa.Text, nullable=False),
    sa.Column("order_system", sa.Text),
    sa.Column("order_code", sa.Text),
    sa.Column("policy_id", sa.Text),
    sa.Column("policy_version", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("covered", sa.Text, nullable=False),
    sa.Column("pa_needed", sa.Text),
    sa.Column("doc_needed", sa.Text),
    sa.Column("questionnaire", sa.Text),
    sa.Column("missing_items", JSONTuple, nullable=False),
    sa.Column("failed_criteria", JSONTuple, nullable=False),
)

card_feedback = sa.Table(
    "card_feedback",
    metadata,
    # Only there to keep insertion order: a card may get feedback several times.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("service_id", sa.Text, nullable=False),
    sa.Column("card_uuid", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("outcome_timestamp", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("accepted_suggestions", JSONTuple, nullable=False),
    sa.Column("override_reason_system", sa.Text),
    sa.Column("override_reason_code", sa.Text),
    sa.Column("override_reason_display", sa.Text),
    sa.Column("override_comment", sa.Text),
    sa.Index("ix_card_feedback_card_uuid", "card_uuid", "received_at", "id"),
)


# One row per client JWT accepted (CDS Hooks: a jti is used once), shared by every worker
# and instance; rows are deleted once the token has expired.
client_token = sa.Table(
    "client_token",
    metadata,
    sa.Column("iss", sa.Text, primary_key=True),
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_client_token_expires_at", "expires_at"),
)
