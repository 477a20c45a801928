"""The same request gets the same answer in every process, whatever its hash seed.

Python randomises str hashes per process (PYTHONHASHSEED), so anything that follows the
iteration order of a set of codes can answer differently after a restart, or in another
gunicorn worker of a freshly started master. Cards then cite the same evidence in another
order, and an EHR that compares answers sees a change where there is none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ["fusion-meets.order-sign.json", "mbb-meets.order-sign.json", "sclero-seed-case.order-sign.json"]

_ANSWER = """
import json, sys, tempfile
from pathlib import Path
from cds_service.config import Settings
from cds_service.web.app import create_app

client = create_app(Settings(data_dir=Path(tempfile.mkdtemp()), log_level="ERROR")).test_client()
answers = []
for path in sys.argv[1:]:
    response = client.post("/cds-services/order-sign-crd", data=Path(path).read_bytes(),
                           content_type="application/json").get_json()
    answers.append([(card["summary"], card["detail"]) for card in response["cards"]])
print(json.dumps(answers))
"""


def _answers(seed: str) -> list:
    paths = [str(ROOT / "fhir_fixtures" / "requests" / name) for name in REQUESTS]
    env = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run([sys.executable, "-c", _ANSWER, *paths], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def answers_with_seed_0() -> list:
    return _answers("0")


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_cards_do_not_depend_on_the_hash_seed(seed: str, answers_with_seed_0: list) -> None:
    assert _answers(seed) == answers_with_seed_0
