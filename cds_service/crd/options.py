"""Da Vinci CRD configuration: the options discovery advertises and the ones a request sets.

Codes come from the CRD response-type value set where one applies (dev-7); a
client may switch each card type off, unknown options are ignored (dev-17) and
nonsense values fall back to the default (dev-6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CARD_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
CRD_VERSIONS = ("2.0", "2.2")


@dataclass(frozen=True)
class ConfigOption:
    code: str
    type: str  # "boolean" | "integer"
    name: str
    description: str
    default: bool | int

    def discovery(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.type, "name": self.name,
                "description": self.description, "default": self.default}


OPTIONS: tuple[ConfigOption, ...] = (
    ConfigOption("coverage-info", "boolean", "Coverage Information",
                 "Coverage information on each order (covered, prior authorization, documentation needed) and the "
                 "cards listing missing documentation and criteria not met.", True),
    ConfigOption("guideline", "boolean", "Guidelines",
                 "A card linking to the payer guideline that applies to the order.", True),
    ConfigOption("therapy-alternatives-req", "boolean", "Required Therapy Alternatives",
                 "Cards proposing orders the guideline requires first or together, e.g. endovenous ablation with "
                 "sclerotherapy or a venous duplex ultrasound.", True),
    ConfigOption("request-form-completion", "boolean", "Documentation Form Task",
                 "A card offering a Task to complete the guideline's documentation Questionnaire, for EHRs that do "
                 "not launch DTR from coverage information.", False),
    ConfigOption("max-cards", "integer", "Maximum cards",
                 "The most cards returned; the most important (not medically necessary, documentation needed) "
                 "come first.", 10),
)
_BY_CODE = {option.code: option for option in OPTIONS}

#: Card topics (source.topic codings) for the card types this service returns.
TOPICS = {
    "coverage-info": {"system": CARD_TYPE_SYSTEM, "code": "coverage-info", "display": "Coverage Information"},
    "guideline": {"system": CARD_TYPE_SYSTEM, "code": "guideline", "display": "Guideline"},
    "therapy-alternatives-req": {"system": CARD_TYPE_SYSTEM, "code": "therapy-alternatives-req",
                                 "display": "Required Therapy Alternatives"},
}


@dataclass(frozen=True)
class CrdOptions:
    values: dict[str, Any]
    version: str  # the CRD version answered ("2.0" unless the client asked for 2.2)

    def enabled(self, code: str) -> bool:
        return bool(self.values[code])

    @property
    def max_cards(self) -> int:
        return int(self.values["max-cards"])


def parse_options(configuration: Any, requested_version: Any) -> CrdOptions:
    """Read ``davinci-crd.configuration`` and ``davinci-crd.requestedVersion`` leniently."""
    values = {option.code: option.default for option in OPTIONS}
    if isinstance(configuration, dict):
        for code, value in configuration.items():
            option = _BY_CODE.get(code)
            if option is None:
                continue
            if option.type == "boolean" and isinstance(value, bool):
                values[code] = value
            elif option.type == "integer" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                values[code] = value
            else:
                log.info("ignoring CRD configuration %s=%r (not a valid %s)", code, value, option.type)
    version = requested_version if requested_version in CRD_VERSIONS else "2.0"
    return CrdOptions(values, version)


def discovery_extension() -> dict[str, Any]:
    return {
        "davinci-crd.version": list(CRD_VERSIONS),
        "davinci-crd.configuration-options": [option.discovery() for option in OPTIONS],
    }
