"""The CDS services: discovery, hook calls and feedback, independent of the web framework.

A hook call is parse -> gather evidence -> evaluate -> render -> record.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from .catalog import Catalog
from .cdshooks import HookRequest
from .cdshooks import parse_feedback
from .cdshooks import parse_hook_request
from .cdshooks import prune
from .config import Settings
from .crd.cards import CardContext
from .crd.cards import render_cards
from .crd.coverage import CoverageDecision
from .crd.coverage import coverage_extension
from .crd.coverage import decide
from .crd.coverage import system_action
from .crd.options import discovery_extension
from .crd.options import parse_options
from .errors import BadRequest
from .errors import ServiceUnavailable
from .errors import NotFound
from .fhir.hydrate import Evidence
from .fhir.hydrate import gather_evidence
from .intake import EvidenceFilter
from .payers import PayerMatch
from .payers import UnknownPayerError
from .payers import identify_payer
from .policy.engine import OrderEvaluation
from .policy.engine import evaluate_order
from .policy.engine import no_policy
from .policy.schema import Policy
from .prefetch import build_templates
from .prefetch import searched_codes
from .prefetch import templates_by_key
from .record import ORDER_CODE_ELEMENTS
from .record import Order
from .record import PatientRecord
from .store import CoverageAssertionRecord
from .store import FeedbackRecord
from .store import Store
from .store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str


SERVICES = (
    ServiceDefinition(
        "order-select-crd", "order-select", "Prior-authorization documentation check (order select)",
        "Early warning while orders are being chosen: which documentation the payer's guideline still needs for "
        "the selected services (CPT/HCPCS), and criteria the record contradicts.",
    ),
    ServiceDefinition(
        "order-sign-crd", "order-sign", "Prior-authorization documentation check (order sign)",
        "Da Vinci CRD coverage information for every order being signed, with cards listing each missing "
        "piece of documentation and each criterion not met, citing the payer guideline.",
    ),
)


class HookService:
    def __init__(self, settings: Settings, catalog: Catalog, store: Store, executor: Executor):
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.executor = executor
        self.templates = build_templates(catalog)
        self.evidence_filter = EvidenceFilter(searched_codes(catalog))

    def close(self) -> None:
        """Release the database pool and the FHIR query threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.dispose()

    # -- discovery -------------------------------------------------------------------

    def discovery(self) -> dict:
        prefetch = templates_by_key(self.templates)
        return {"services": [
            {"hook": s.hook, "title": s.title, "description": s.description, "id": s.id,
             "prefetch": prefetch, "extension": discovery_extension()}
            for s in SERVICES
        ]}

    def definition(self, service_id: str) -> ServiceDefinition:
        for service in SERVICES:
            if service.id == service_id:
                return service
        raise NotFound(f"no CDS service '{service_id}'; GET /cds-services lists them")

    # -- hook calls ------------------------------------------------------------------

    def call(self, service_id: str, body: bytes, base_url: str) -> dict:
        started = time.monotonic()
        service = self.definition(service_id)
        request = parse_hook_request(body, self.evidence_filter)
        if request.hook != service.hook:
            # The CDS Hooks Sandbox sends the page's hook, not the service's: route by id.
            log.info("hook %s called with hook=%s; answering as %s", service.id, request.hook, service.hook)
        assessment = self.assess(service.hook, request, started)
        if assessment is None:
            return {"cards": []}
        payer, evaluations, evidence = assessment
        today = datetime.now(timezone.utc).date()
        options = parse_options(request.crd_extension("davinci-crd.configuration"),
                                request.crd_extension("davinci-crd.requestedVersion"))
        links = {e.policy.id: self.policy_link(e.policy, base_url) for e in evaluations if e.policy}
        context = CardContext(service.hook, payer, options, today, request.context.patientId, links,
                              request.context.userId)
        cards = render_cards(evaluations, context)
        actions, decisions = [], []
        if options.enabled("coverage-info"):
            for evaluation in evaluations:
                decision = decide(evaluation, payer, service.hook, options.version)
                link = links.get(evaluation.policy.id) if evaluation.policy else None
                extension = coverage_extension(decision, evaluation, payer, today, options.version, link)
                action = system_action(evaluation.order.resource, extension)
                if action is not None:
                    actions.append(action)
                    decisions.append((evaluation, decision))
        self._record(service, request, payer, decisions)
        log.info(
            "%s %s patient=%s payer=%s orders=%s outcomes=%s queries=%d gaps=%s %.1f ms",
            service.id, request.hookInstance, request.context.patientId, payer.payer.id,
            ",".join(e.order.reference for e in evaluations), ",".join(e.outcome.value for e in evaluations),
            evidence.queries, ",".join(sorted(evidence.unavailable)) or "-", (time.monotonic() - started) * 1000,
        )
        response = {"cards": prune(cards)}
        if actions:
            response["systemActions"] = prune(actions)
        return response

    def assess(self, hook: str, request: HookRequest, started: float
               ) -> tuple[PayerMatch, list[OrderEvaluation], Evidence] | None:
        """Gather the evidence and evaluate every order in scope; None when no order is in scope."""
        orders = [Order.from_resource(e.resource) for e in request.context.draftOrders.entry if e.resource]
        in_scope = _in_scope(hook, request, orders, self.catalog)
        if not in_scope:
            return None
        evidence = gather_evidence(request, self.templates, self.catalog.evidence_types(in_scope), self.settings,
                                   self.executor, started + self.settings.hook_deadline_seconds)
        record = PatientRecord(evidence.resources, orders, evidence.unavailable)
        today = datetime.now(timezone.utc).date()
        try:
            payer = identify_payer(self.catalog.payers, record, today)
        except UnknownPayerError as exc:
            raise BadRequest(str(exc), expression="prefetch.coverage") from None
        return payer, [self._evaluate(payer, order, record, today) for order in in_scope], evidence

    def _evaluate(self, payer: PayerMatch, order: Order, record: PatientRecord, today) -> OrderEvaluation:
        match = self.catalog.rule_for(payer.payer.id, order)
        if match is None:
            return no_policy(order, today, record.unavailable)
        policy, rule = match
        return evaluate_order(policy, rule, order, record, today, self.catalog.rule_types[policy.id, rule.id])

    def policy_link(self, policy: Policy, base_url: str) -> str:
        if policy.provenance.url:
            return policy.provenance.url
        base = (self.settings.public_base_url or base_url).rstrip("/")
        return f"{base}/policies/{policy.id}"

    def _record(self, service: ServiceDefinition, request: HookRequest, payer: PayerMatch,
                decisions: list[tuple[OrderEvaluation, CoverageDecision]]) -> None:
        if not decisions:
            return
        now = datetime.now(timezone.utc)
        records = []
        for evaluation, decision in decisions:
            system, code = (evaluation.order.codings[0][:2]) if evaluation.order.codings else (None, None)
            records.append(CoverageAssertionRecord(
                assertion_id=decision.assertion_id, created_at=now, hook=service.hook,
                hook_instance=request.hookInstance, service_id=service.id, patient_id=request.context.patientId,
                payer_id=payer.payer.id, order_reference=evaluation.order.reference, order_system=system,
                order_code=code, policy_id=evaluation.policy.id if evaluation.policy else None,
                policy_version=evaluation.policy.version if evaluation.policy else None,
                outcome=decision.outcome, covered=decision.covered, pa_needed=decision.pa_needed,
                doc_needed=decision.doc_needed, questionnaire=decision.questionnaire,
                missing_items=evaluation.missing_ids, failed_criteria=evaluation.failed_ids,
            ))
        try:
            self.store.save_assertions(records)
        except StoreError as exc:
            log.error("coverage assertions not recorded: %s", exc)
            raise ServiceUnavailable("coverage assertions could not be recorded; retry the request") from None

    # -- feedback --------------------------------------------------------------------

    def feedback(self, service_id: str, body: bytes) -> int:
        service = self.definition(service_id)
        parsed = parse_feedback(body)
        received = datetime.now(timezone.utc)
        records = []
        for item in parsed.feedback:
            coding = item.override_coding() or {}
            records.append(FeedbackRecord(
                service_id=service.id, card_uuid=item.card, outcome=item.outcome,
                outcome_timestamp=_timestamp(item.outcomeTimestamp), received_at=received,
                accepted_suggestions=tuple(s["id"] for s in item.acceptedSuggestions if isinstance(s.get("id"), str) and s["id"]),
                override_reason_system=coding.get("system"), override_reason_code=coding.get("code"),
                override_reason_display=coding.get("display"), override_comment=item.override_comment(),
            ))
        try:
            self.store.save_feedback(records)
        except StoreError as exc:
            log.error("feedback not recorded: %s", exc)
            raise ServiceUnavailable("feedback could not be recorded; retry the request") from None
        return len(records)


def _in_scope(hook: str, request: HookRequest, orders: list[Order], catalog: Catalog) -> list[Order]:
    """The orders to answer for.

    order-sign is a primary CRD hook: every draft order that can carry coverage information
    gets it, one without any code included (the answer then says the code is needed).
    order-select is secondary, an early warning: the selected orders some payer policy governs;
    others (and the CDS Hooks Sandbox's first call, with ``coding: [{}]``) get nothing.
    """
    answerable = [o for o in orders if o.resource_type in ORDER_CODE_ELEMENTS]
    if hook != "order-select":
        return answerable
    governed = [o for o in answerable if catalog.governs(o)]
    selections = request.context.selections
    if selections:
        chosen = {s.strip() for s in selections if isinstance(s, str)}
        return [o for o in governed if o.reference in chosen]
    return governed


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"outcomeTimestamp '{value}' is not an RFC 3339 date-time",
                         expression="feedback.outcomeTimestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
