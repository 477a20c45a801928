"""Persistence for coverage assertions, CDS Hooks feedback and used client token ids (see ``store.py``)."""

from .records import CoverageAssertionRecord, FeedbackRecord, StoreError
from .store import Store, default_sqlite_url

__all__ = [
    "CoverageAssertionRecord",
    "FeedbackRecord",
    "Store",
    "StoreError",
    "default_sqlite_url",
]
