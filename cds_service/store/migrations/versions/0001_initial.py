"""Coverage assertions and CDS Hooks card feedback.

Revision ID: 0001
Revises:
Create Date: 2025-11-21

Written out in full rather than imported from schema.py: a revision must keep creating
the same tables whatever later code looks like.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coverage_assertion",
        sa.Column("assertion_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
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
        sa.Column("missing_items", sa.Text, nullable=False),
        sa.Column("failed_criteria", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("assertion_id", name="pk_coverage_assertion"),
    )
    op.create_table(
        "card_feedback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("service_id", sa.Text, nullable=False),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_suggestions", sa.Text, nullable=False),
        sa.Column("override_reason_system", sa.Text),
        sa.Column("override_reason_code", sa.Text),
        sa.Column("override_reason_display", sa.Text),
        sa.Column("override_comment", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_card_feedback"),
    )
    # Serves feedback_for_card(), including its ORDER BY.
    op.create_index(
        "ix_card_feedback_card_uuid", "card_feedback", ["card_uuid", "received_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("card_feedback")
    op.drop_table("coverage_assertion")
