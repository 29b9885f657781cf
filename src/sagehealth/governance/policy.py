"""Principals and the role matrix: who may do what, for which patients, for what purpose.

Roles (from the privacy issue): ``clinician`` reads identified data of the patients on their
care-team list; ``researcher`` reads the research zone only; ``steward`` ingests, manages the
quarantine and configuration; ``auditor`` reads the audit log only. The matrix is data
(``MATRIX``); :func:`authorize` is the one check every door calls, and it raises
:class:`AccessDenied` with who, what and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sagehealth.errors import AccessDenied

ROLES = ("clinician", "researcher", "steward", "auditor")
#: what can be done to the store
ACTIONS = (
    "read_clinical",  # identified rows and documents (clinical zone)
    "read_research",  # de-identified research zone
    "ingest",  # write new data
    "read_quarantine",  # bad records, which may hold identified raw content
    "configure",  # settings, keys, consent registry
    "read_audit",  # the audit log
)
#: role -> actions it may take (patient scoping is applied on top for clinicians)
MATRIX: dict[str, frozenset[str]] = {
    "clinician": frozenset({"read_clinical"}),
    "researcher": frozenset({"read_research"}),
    "steward": frozenset({"ingest", "read_quarantine", "configure"}),
    "auditor": frozenset({"read_audit"}),
}
#: purposes of use (HL7 PurposeOfUse-like); a principal must state one
PURPOSES = ("treatment", "research", "operations", "audit", "quality", "public_health")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user, one role, a purpose of use and (clinicians) their patients."""

    user: str
    role: str
    purpose: str
    patients: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.user or not self.user.strip():
            raise AccessDenied("a principal needs a user name")
        if self.role not in ROLES:
            raise AccessDenied(
                f"principal {self.user!r} has no valid role ({self.role!r}); roles: {', '.join(ROLES)}"
            )
        if self.purpose not in PURPOSES:
            raise AccessDenied(
                f"principal {self.user!r} states no valid purpose of use ({self.purpose!r}); "
                f"purposes: {', '.join(PURPOSES)}"
            )
        object.__setattr__(self, "patients", frozenset(self.patients))


def authorize(principal: Principal, action: str, patients: Iterable[str] | None = None) -> None:
    """Allow or refuse ``action`` for ``principal`` (on ``patients`` when it reads identified
    data). Raises :class:`AccessDenied` saying who, what and why."""
    if action not in ACTIONS:
        raise AccessDenied(f"unknown action {action!r}")
    if action not in MATRIX[principal.role]:
        raise AccessDenied(
            f"{principal.user} ({principal.role}) may not {action.replace('_', ' ')}; "
            f"a {principal.role} may: {', '.join(sorted(MATRIX[principal.role])).replace('_', ' ')}"
        )
    if action == "read_clinical":
        wanted = set(patients) if patients is not None else None
        if wanted is None:
            raise AccessDenied(
                f"{principal.user} (clinician) must name the patients to read identified data of"
            )
        outside = wanted - principal.patients
        if outside:
            raise AccessDenied(
                f"{principal.user} (clinician) is not on the care team of {len(outside)} of the "
                f"{len(wanted)} patients asked for"
            )
