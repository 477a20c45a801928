"""A one-policy cards/ directory for tests that need a policy the bundled ones do not have."""

from __future__ import annotations

import shutil
from pathlib import Path

from cds_service.catalog import bundled_policy_dir

#: A demo policy up to its criteria list: append ``- id: …`` criteria indented by 8 spaces.
DEMO_POLICY_HEAD = """\
id: demo
title: Demo policy
provenance:
  publisher: Demo payer
  document: Demo guideline
  version: "1"
  source_file: demo.txt
payers: [cohere-demo]
summary: A demo.
rules:
  - id: demo-rule
    title: Demo rule
    codes: {cpt: ["99999"]}
    criteria:
      all_of:
"""


def policy_dir(root: Path, policy_text: str) -> Path:
    """``root/cards`` with the bundled payers and finding codes and one policy file, demo.yaml."""
    target = root / "cards"
    (target / "policies").mkdir(parents=True)
    for name in ("payers.yaml", "documentation-findings.codesystem.json"):
        shutil.copy(bundled_policy_dir() / name, target)
    (target / "policies" / "demo.yaml").write_text(policy_text)
    return target
