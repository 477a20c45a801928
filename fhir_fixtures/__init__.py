"""Bundled demo patients and example hook requests (data only)."""
