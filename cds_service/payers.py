"""Payers: who they are (identifiers, names), their settings, and finding them from a Coverage.

The demo configuration lives in ``cards/payers.yaml``. A CRD server usually
serves one payer and uses the Coverage to confirm and pick the plan; this
service serves several, chosen by the Coverage's payor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import model_validator

from .fhirjson import as_dict
from .fhirjson import dicts
from .fhirjson import string
from .policy.timing import parse_fhir_date
from .record import PatientRecord

PaNeeded = Literal["no-auth", "auth-needed", "satisfied", "performpa", "conditional"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PayerIdentifier(_Strict):
    system: str
    value: str


class NoPolicyAnswer(_Strict):
    """What to say about an order none of the payer's policies covers."""

    covered: Literal["covered", "not-covered", "conditional"] = "covered"
    pa_needed: PaNeeded | None = "no-auth"

    @model_validator(mode="after")
    def _consistent(self) -> "NoPolicyAnswer":
        if self.covered == "not-covered" and self.pa_needed is not None:
            raise ValueError("pa_needed must be omitted when covered is not-covered")
        if self.covered != "not-covered" and self.pa_needed is None:
            raise ValueError("pa_needed is required unless covered is not-covered")
        return self


class Payer(_Strict):
    id: str
    name: str = Field(description="Shown as card source.label: a name the patient and user recognise")
    identifiers: tuple[PayerIdentifier, ...] = ()
    aliases: tuple[str, ...] = ()
    prior_auth: PaNeeded = Field("auth-needed", description="pa-needed when an order meets the policy criteria")
    no_policy: NoPolicyAnswer = NoPolicyAnswer()


class PayerConfig(_Strict):
    default_payer: str
    unknown_payer: Literal["default", "reject"] = Field(
        "default", description="A Coverage naming a payer not configured here: answer as the default payer, or 400"
    )
    no_coverage: Literal["default", "not-covered"] = Field(
        "default", description="A request without a Coverage: answer as the default payer (sandboxes, demos), or "
                               "not-covered with the reason coverage-not-found (CRD, a payer's own endpoint)"
    )
    payers: tuple[Payer, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_exists(self) -> "PayerConfig":
        ids = [p.id for p in self.payers]
        if len(set(ids)) != len(ids):
            raise ValueError("payer ids must be unique")
        if self.default_payer not in ids:
            raise ValueError(f"default_payer '{self.default_payer}' is not one of the payers")
        return self

    def get(self, payer_id: str) -> Payer:
        return next(p for p in self.payers if p.id == payer_id)


@dataclass(frozen=True)
class PayerMatch:
    """The payer an order is evaluated for, and the Coverage that named it (if any)."""

    payer: Payer
    coverage: dict | None
    #: How the payer was found: "coverage", "no-coverage" (default used), "unknown-payer" (default
    #: used), or - nothing is covered - "inactive-coverage" (the Coverage is not in force),
    #: "coverage-not-found" (none on record, and the configuration says so) or "ambiguous-coverage"
    #: (several of this service's payers' Coverages in force, none ranked first).
    basis: str
    #: Why nothing is covered, e.g. "its period ended 2025-12-31"; None when the payer answers.
    not_covering: str | None = None

    @property
    def coverage_reference(self) -> str | None:
        if self.coverage and isinstance(self.coverage.get("id"), str):
            return f"Coverage/{self.coverage['id']}"
        return None


class UnknownPayerError(Exception):
    """The Coverage names a payer this service does not handle (CRD hook-13: answer 400)."""


def not_in_force(coverage: dict, on: date) -> str | None:
    """Why *coverage* does not cover services on *on* (status, period), or None when it does."""
    status = coverage.get("status")
    if status is not None and status != "active":
        return f"its status is {status}"
    period = as_dict(coverage.get("period"))
    start, end = parse_fhir_date(period.get("start")), parse_fhir_date(period.get("end"))
    if start is not None and on < start:
        return f"its period starts {start.isoformat()}"
    if end is not None and end < on:
        return f"its period ended {end.isoformat()}"
    return None


def identify_payer(config: PayerConfig, record: PatientRecord, on: date) -> PayerMatch:
    """Find the payer from the record's primary Coverage (payor identifier, Organization, or display).

    Of the Coverages in force on *on*, those with a payer configured here count (another payer's
    coverage, e.g. a secondary plan, is not this service's to answer for); of those the lowest
    ``order`` is the primary one. When several tie for first, which one the order falls under cannot
    be told: nothing is covered until the EHR ranks them (CRD: not-covered, coverage-not-found).
    When none is in force, the first Coverage names the payer and the match says why it is not.
    """
    coverages = record.coverages()
    if not coverages:
        if config.no_coverage == "not-covered":
            return PayerMatch(config.get(config.default_payer), None, "coverage-not-found",
                              "the request carries no Coverage for the patient")
        return PayerMatch(config.get(config.default_payer), None, "no-coverage")
    reasons = [not_in_force(c, on) for c in coverages]
    current = sorted((c for c, reason in zip(coverages, reasons) if reason is None), key=_priority)
    ours = [(c, payer) for c in current if (payer := _payer_of(config, record, c)) is not None]
    if len(ours) > 1 and _priority(ours[0][0]) == _priority(ours[1][0]):
        tied = [c for c, _ in ours if _priority(c) == _priority(ours[0][0])]
        return PayerMatch(ours[0][1], None, "ambiguous-coverage",
                          f"{len(tied)} Coverages are in force and Coverage.order ranks none of them first")
    if ours:
        return PayerMatch(ours[0][1], ours[0][0], "coverage")
    if current:
        coverage, inactive = current[0], None
    else:  # none in force: the first one names the payer, and says why
        coverage, inactive = coverages[0], reasons[0]
        payer = _payer_of(config, record, coverage)
        if payer is not None:
            return PayerMatch(payer, coverage, "inactive-coverage", inactive)
    if config.unknown_payer == "reject":
        raise UnknownPayerError("the Coverage's payor is not a payer this service handles")
    return PayerMatch(config.get(config.default_payer), coverage, "inactive-coverage" if inactive else "unknown-payer",
                      inactive)


def _priority(coverage: dict) -> float:
    """Coverage.order: 1 is the primary coverage; unranked ones come after ranked ones."""
    order = coverage.get("order")
    return order if isinstance(order, int) and not isinstance(order, bool) else float("inf")


def _payer_of(config: PayerConfig, record: PatientRecord, coverage: dict) -> Payer | None:
    """The configured payer a Coverage's payor names, if any."""
    for reference in dicts(coverage.get("payor")):
        payer = _match(config, reference, record.resolve(reference, coverage))
        if payer is not None:
            return payer
    return None


def _match(config: PayerConfig, reference: dict, organization: dict | None) -> Payer | None:
    identifiers = []
    if isinstance(reference.get("identifier"), dict):
        identifiers.append(reference["identifier"])
    names = [reference.get("display")]
    if organization is not None:
        identifiers += dicts(organization.get("identifier"))
        aliases = organization.get("alias")
        names += [organization.get("name")] + (aliases if isinstance(aliases, list) else [])
    wanted = {(string(i.get("system")), string(i.get("value"))) for i in identifiers}
    spelled = {n.strip().casefold() for n in names if isinstance(n, str) and n.strip()}
    for payer in config.payers:
        if any((i.system, i.value) in wanted for i in payer.identifiers):
            return payer
        if spelled & {n.casefold() for n in (payer.name, *payer.aliases)}:
            return payer
    return None
