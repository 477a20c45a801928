"""Alembic migrations for the store, shipped inside the package.

``Store.migrate()`` reads ``alembic.ini`` from this directory, so migrations work from
any working directory after a plain ``pip install .``.
"""

from pathlib import Path

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
