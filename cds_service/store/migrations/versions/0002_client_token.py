"""Client JWT ids seen, so a token cannot be replayed against another worker or instance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_token",
        sa.Column("iss", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name="pk_client_token"),
    )
    op.create_index("ix_client_token_expires_at", "client_token", ["expires_at"])


def downgrade() -> None:
    op.drop_table("client_token")
