"""Alembic revision files (loaded by Alembic by path; a package only so setuptools ships them)."""
