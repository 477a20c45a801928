"""``cds-service``: serve, evaluate a request or bundle, check policies, read an assertion back."""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from datetime import timezone
from pathlib import Path

from gunicorn.app.base import BaseApplication

from .catalog import Catalog
from .catalog import bundled_policy_dir
from .cdshooks import parse_hook_request
from .config import Settings
from .errors import RequestError
from .policy.engine import NodeResult
from .policy.engine import OrderEvaluation
from .policy.engine import evaluate_order
from .policy.engine import no_policy
from .policy.loader import PolicyError
from .policy.predicates import Status
from .policy.schema import Leaf
from .payers import identify_payer
from .record import Order
from .record import PatientRecord
from .service import HookService
from .serving import gunicorn_settings
from .serving import tune_garbage_collector
from .web.app import create_app

_MARK = {Status.MET: "[met]", Status.NOT_MET: "[NOT MET]", Status.UNDOCUMENTED: "[undocumented]"}


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in (("policy_dir", getattr(args, "policy_dir", None)),
                                    ("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                    ("workers", getattr(args, "workers", None))) if v is not None}
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    """Run the production server (gunicorn, threaded workers)."""
    settings = _settings(args)
    Catalog.load(settings.policy_dir or bundled_policy_dir())  # fail fast, before forking workers
    store = settings.open_store()
    store.migrate()
    store.dispose()

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_settings(settings).items():
                self.cfg.set(key, value)

        def load(self):
            app = create_app(settings)
            tune_garbage_collector()
            return app

    Application().run()
    return 0


def _print_node(result: NodeResult, depth: int = 0) -> None:
    node = result.node
    pad = "  " * depth
    label = node.text or type(node).__name__
    level = f" [{result.level}]" if result.level and isinstance(node, Leaf) else ""
    applicable = "" if result.applicable else " (not applicable)"
    print(f"{pad}{_MARK[result.status]} {label}{level}{applicable}" + (f"  ({node.id})" if node.id else ""))
    if result.reason:
        print(f"{pad}    note: {result.reason}")
    if result.evidence:
        print(f"{pad}    evidence: {', '.join(result.evidence)}")
    if isinstance(node, Leaf):
        print(f'{pad}    cite: {node.cite.section}: "{node.cite.quote}"')
    for child in result.children:
        _print_node(child, depth + 1)


def _print_evaluation(evaluation: OrderEvaluation) -> None:
    order = evaluation.order
    print(f"\n== {order.reference} {order.code_label}: {evaluation.outcome.value}")
    if evaluation.policy is None:
        print("   no policy applies")
        return
    print(f"   policy {evaluation.policy.id} {evaluation.policy.version}, rule {evaluation.rule.id}, as of {evaluation.as_of}")
    if evaluation.evidence_gaps:
        print(f"   evidence not retrieved: {', '.join(evaluation.evidence_gaps)}")
    for finding in evaluation.failed:
        print(f"   FAILED  {finding.id}: {finding.text}" + (f" — {finding.reason}" if finding.reason else ""))
    for finding in evaluation.missing:
        print(f"   MISSING {finding.id}: {finding.text}" + (f" [{finding.level}]" if finding.level else ""))
    for finding in evaluation.unresolved:
        print(f"   RULE OUT {finding.id}: {finding.text}" + (f" — {finding.reason}" if finding.reason else ""))
    if evaluation.tree is not None:
        print("   criteria:")
        _print_node(evaluation.tree, 2)
    for exclusion in evaluation.exclusions:
        print("   exclusion:")
        _print_node(exclusion, 2)


def evaluate(args: argparse.Namespace) -> int:
    """Print the evaluation tree for a hook request file, or a patient bundle plus an order id."""
    settings = _settings(args)
    catalog = Catalog.load(settings.policy_dir or bundled_policy_dir())
    data = json.loads(Path(args.file).read_text())
    if data.get("resourceType") == "Bundle":
        resources = [e["resource"] for e in data.get("entry", []) if isinstance(e, dict) and "resource" in e]
        drafts = [r for r in resources if r.get("resourceType") == "ServiceRequest" and r.get("status") == "draft"]
        chosen = [r for r in drafts if args.order is None or r.get("id") == args.order]
        if not chosen:
            print("no draft ServiceRequest in the bundle" + (f" with id {args.order}" if args.order else ""))
            return 2
        orders = [Order.from_resource(r) for r in drafts]
        record = PatientRecord([r for r in resources if r not in drafts], orders)
        today = datetime.now(timezone.utc).date()
        payer = catalog.payers.get(args.payer) if args.payer else identify_payer(catalog.payers, record, today).payer
        for order in (o for o in orders if o.resource in chosen):
            match = catalog.rule_for(payer.id, order)
            _print_evaluation(evaluate_order(*match, order, record, today) if match else no_policy(order, today))
        return 0
    service = HookService(settings, catalog, store=None, executor=ThreadPoolExecutor(max_workers=8))
    request = parse_hook_request(Path(args.file).read_bytes())
    try:
        assessment = service.assess(request.hook, request, time.monotonic())
    except RequestError as exc:
        print(f"request rejected ({exc.status}): {exc.message}")
        return 2
    if assessment is None:
        print("no order in scope: no guidance")
        return 0
    payer, evaluations, evidence = assessment
    why = f", nothing covered: {payer.not_covering}" if payer.not_covering else ""
    print(f"payer: {payer.payer.name} ({payer.basis}{why}); evidence queries: {evidence.queries}")
    for evaluation in evaluations:
        _print_evaluation(evaluation)
    return 0


def check_policies(args: argparse.Namespace) -> int:
    """Validate every policy, the payers and the finding codes; list what each payer gets."""
    directory = Path(args.policy_dir) if args.policy_dir else bundled_policy_dir()
    try:
        catalog = Catalog.load(directory)
    except PolicyError as exc:
        print(f"{len(exc.problems)} problem(s) in {directory}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for policy in catalog.policies:
        codes = sorted(code for rule in policy.rules for _, code in rule.codes.exact)
        print(f"ok  {policy.id} {policy.version}: {len(policy.rules)} rule(s), codes {', '.join(codes)}; "
              f"payers {', '.join(policy.payers)}")
    for payer in catalog.payers.payers:
        print(f"payer {payer.id} ({payer.name}): {', '.join(p.id for p in catalog.policies_for(payer.id))}")
    return 0


def assertion(args: argparse.Namespace) -> int:
    """Print a stored coverage assertion by its coverage-assertion-id."""
    store = _settings(args).open_store()
    record = store.get_assertion(args.assertion_id)
    store.dispose()
    if record is None:
        print(f"no coverage assertion {args.assertion_id}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(record), default=str, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the service under gunicorn")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--policy-dir")
    p.set_defaults(func=serve)

    p = commands.add_parser("evaluate", help="evaluate a hook request file, or a patient bundle and an order")
    p.add_argument("file", help="a CDS Hooks request JSON, or a FHIR Bundle holding draft ServiceRequests")
    p.add_argument("--order", help="with a Bundle: the id of the draft ServiceRequest (default: all)")
    p.add_argument("--payer", help="with a Bundle: payer id (default: from the Coverage)")
    p.add_argument("--policy-dir")
    p.set_defaults(func=evaluate)

    p = commands.add_parser("check-policies", help="validate every policy file")
    p.add_argument("--policy-dir")
    p.set_defaults(func=check_policies)

    p = commands.add_parser("assertion", help="print a stored coverage assertion")
    p.add_argument("assertion_id")
    p.set_defaults(func=assertion)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
