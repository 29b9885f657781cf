"""The result type of PHI detection: typed character spans."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: PHI types (HIPAA Safe Harbor identifier kinds as they occur in clinical text)
PHI_TYPES = (
    "NAME", "LOCATION", "HOSPITAL", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN",
    "ACCOUNT", "HEALTH_PLAN", "LICENSE", "DEVICE_ID", "VEHICLE_ID", "URL", "IP", "ID",
)


@dataclass(frozen=True, slots=True)
class Span:
    """One detected identifier: ``text[start:end]`` is the PHI, ``type`` one of PHI_TYPES,
    ``rule`` the name of the rule that found it (for explanations and error analysis)."""

    start: int
    end: int
    type: str
    text: str
    rule: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
