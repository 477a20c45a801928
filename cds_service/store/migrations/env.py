"""Alembic environment: runs on the connection ``Store.migrate()`` hands over.

That connection is already inside a transaction holding the migration lock, so Alembic
treats the transaction as external and every revision commits (or rolls back) together.
There is no offline mode and no autogenerate.
"""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "apply these migrations with cds_service.store.Store.migrate(), "
        "which supplies the connection and the migration lock"
    )

context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
