"""A malformed policy fails at load time, naming the file and the line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.catalog import Catalog
from cds_service.catalog import bundled_policy_dir
from cds_service.policy.loader import PolicyError
from cds_service.record import Order
from tests.support.hooks import service_request
from tests.support.policies import DEMO_POLICY_HEAD
from tests.support.policies import policy_dir as write_policy_dir

VALID = DEMO_POLICY_HEAD + """\
        - id: adult
          text: Adult
          cite: {section: S, quote: Q}
          documentation: Date of birth
          age: {min: 18}
        - id: has-condition
          text: Has the condition
          cite: {section: S, quote: Q}
          documentation: A diagnosis
          condition:
            codes: {icd10cm: [M54.16]}
"""


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    return write_policy_dir(tmp_path, VALID)


def _problems(policy_dir: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        Catalog.load(policy_dir)
    return str(caught.value)


def test_the_valid_demo_policy_loads(policy_dir):
    assert [p.id for p in Catalog.load(policy_dir).policies] == ["demo"]


@pytest.mark.parametrize("old, new, line, message", [
    ("          age: {min: 18}", "          aeg: {min: 18}", 20, "unknown predicate or field 'aeg'"),
    ("codes: {icd10cm: [M54.16]}", "codes: {icd10cm: [MM54.16]}", 26, "MM54.16"),
    ("codes: {icd10cm: [M54.16]}", "codes: {loinc: [72514-4]}", 26, "check digit"),
    ("codes: {icd10cm: [M54.16]}", "codes: {snomed: ['128587004']}", 26, "check digit"),
    ("codes: {icd10cm: [M54.16]}", "codes: {finding: [no-such-finding]}", None, "no-such-finding"),
    ("codes: {icd10cm: [M54.16]}", "codes: {icd10: [M54.16]}", 26, "unknown code system 'icd10'"),
    ("          age: {min: 18}", "          age: {min: 18}\n          condition: {codes: {icd10cm: [M54]}}", 16,
     "exactly one predicate"),
    ("          cite: {section: S, quote: Q}\n          documentation: Date of birth\n", "", 16, "cite"),
    ("        - id: has-condition", "        - id: adult", 21, "duplicate criterion id 'adult'"),
    ("          age: {min: 18}", "          ref: nowhere", 16, "ref 'nowhere' is not in definitions"),
    ("payers: [cohere-demo]", "payers: [acme]", None, "payer 'acme' is not in payers.yaml"),
    ("codes: {cpt: [\"99999\"]}", "codes: {cpt: [\"37238\"]}", None, "also claimed by 'cohere-venous-stents'"),
    ("          age: {min: 18}", "          order: {codes: {cpt: ['22633']}, level: L5}", 20,
     "level 'L5' is not one spinal interspace"),
    ("          age: {min: 18}", "          observation: {codes: {loinc: [8480-6]}, value: '> 140 mm[Hg]', "
     "duration_grows: true}", 20, "duration_grows needs a value compared in a unit of time"),
    ("          age: {min: 18}", "          procedure: {codes: {cpt: ['36475']}, "
     "after_latest_result: {codes: {finding: [no-such-result]}}}", None, "no-such-result"),
    ("          age: {min: 18}", "          observation: {codes: {loinc: [8480-6]}, unsited_is_every_level: true}", 20,
     "unsited_is_every_level only applies with at_level: true"),
    ("          age: {min: 18}", "          observation: {codes: {loinc: [8480-6]}, body_site_text: [tributary]}", 20,
     "body_site_text is an alternative to body_site codes"),
    ("          age: {min: 18}", "          procedure: {codes: {cpt: ['97110']}, min_span: 3 months, calendar_weeks: true}",
     20, "calendar_weeks counts the weeks of a min_span given in weeks"),
    ("          age: {min: 18}", "          procedure: {codes: {cpt: ['22633']}, unsited_is_every_level: true}", 20,
     "unsited_is_every_level only applies with at_level: true"),
    ("          age: {min: 18}", "          report: {codes: {loinc: [24968-0]}, at_level: true}", 20,
     "at_level reads the levels a conclusion names: it needs conclusion_text"),
    ("          age: {min: 18}", "          report: {codes: {loinc: [24968-0]}, conclusion_text_not: [mild … stenosis]}",
     20, "conclusion_text_not qualifies conclusion_text"),
    ("id: demo\n", "id: other\n", 1, "must match the file name"),
    ("title: Demo policy", "title: [unclosed", 3, "invalid YAML"),
])
def test_load_errors_name_file_and_line(policy_dir, old, new, line, message):
    path = policy_dir / "policies" / "demo.yaml"
    assert old in VALID
    path.write_text(VALID.replace(old, new))
    assert new in path.read_text()
    if "also claimed" in message:
        shutil.copy(bundled_policy_dir() / "policies" / "cohere-venous-stents.yaml", policy_dir / "policies")
    problems = _problems(policy_dir)
    assert message in problems, problems
    assert "demo.yaml" in problems
    if line is not None:
        assert f"demo.yaml:{line}:" in problems, problems


def test_every_problem_is_reported_not_just_the_first(policy_dir):
    (policy_dir / "policies" / "demo.yaml").write_text(
        VALID.replace("age: {min: 18}", "aeg: {min: 18}").replace("[M54.16]", "[MM54.16]"))
    problems = _problems(policy_dir)
    assert "aeg" in problems and "MM54.16" in problems


def test_check_policies_command_exits_non_zero_with_the_problems(policy_dir):
    (policy_dir / "policies" / "demo.yaml").write_text(VALID.replace("age: {min: 18}", "aeg: {min: 18}"))
    result = subprocess.run([sys.executable, "-m", "cds_service.cli", "check-policies", "--policy-dir", str(policy_dir)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "demo.yaml:20:" in result.stderr and "aeg" in result.stderr
    good = subprocess.run([sys.executable, "-m", "cds_service.cli", "check-policies"], capture_output=True, text=True)
    assert good.returncode == 0 and "ok  cohere-venous-stents" in good.stdout


def test_rule_lookup_stays_right_past_its_memory_bound():
    """rule_for remembers answers per payer and order codes, bounded: clients send any codes."""
    catalog = Catalog.load(bundled_policy_dir())
    payer = catalog.payers.payers[0].id
    stent = Order.from_resource(service_request("37238"))
    expected = catalog.rule_for(payer, stent)
    assert expected is not None
    for number in range(5000):  # more distinct codes than it keeps
        assert catalog.rule_for(payer, Order.from_resource(service_request(f"9{number:04d}"))) is None
    assert catalog.rule_for(payer, stent) == expected
    assert len(catalog._rules_found) <= 4096
