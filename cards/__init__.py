"""Bundled payer policies (data only): see docs/policy-format.md."""
