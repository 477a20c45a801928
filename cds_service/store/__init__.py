"""Persistence for coverage assertions and CDS Hooks feedback (see ``store.py``)."""

from .records import CoverageAssertionRecord, FeedbackRecord, StoreError
from .store import Store, default_sqlite_url

__all__ = [
    "CoverageAssertionRecord",
    "FeedbackRecord",
    "Store",
    "StoreError",
    "default_sqlite_url",
]
