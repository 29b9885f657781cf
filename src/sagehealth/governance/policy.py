"""Principals and the role matrix: who may do what, for which patients, for what purpose.

Roles (from the privacy issue): ``clinician`` reads identified data of the patients on their
care-team list; ``researcher`` reads the research zone only; ``steward`` ingests, manages the
quarantine and configuration; ``auditor`` reads the audit log only. The matrix is data
(``MATRIX``); :func:`authorize` is the one check every door calls, and it raises
:class:`AccessDenied` with who, what and why.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping
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
    "read_system",  # provenance, source files, versions, consent registry (operations)
    "export",  # write de-identified file copies (DICOM, VCF) out of the store
)
#: role -> actions it may take (patient scoping is applied on top for clinicians)
MATRIX: dict[str, frozenset[str]] = {
    "clinician": frozenset({"read_clinical"}),
    "researcher": frozenset({"read_research"}),
    "steward": frozenset({"ingest", "read_quarantine", "configure", "read_system", "export"}),
    "auditor": frozenset({"read_audit"}),
}
#: purposes of use (HL7 PurposeOfUse-like); a principal must state one
PURPOSES = ("treatment", "research", "operations", "audit", "quality", "public_health")
#: role -> purposes of use it may act under (the first is the default when none is stated)
ROLE_PURPOSES: dict[str, tuple[str, ...]] = {
    "clinician": ("treatment", "quality"),
    "researcher": ("research", "public_health", "quality"),
    "steward": ("operations", "quality"),
    "auditor": ("audit", "operations"),
}


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
    if principal.purpose not in ROLE_PURPOSES[principal.role]:
        raise AccessDenied(
            f"{principal.user} ({principal.role}) may not act for the purpose of {principal.purpose}; "
            f"a {principal.role} acts for: {', '.join(ROLE_PURPOSES[principal.role])}"
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


#: environment variables a door (CLI, server) reads the principal from
PRINCIPAL_ENV = {"user": "SAGEHEALTH_USER", "role": "SAGEHEALTH_ROLE", "purpose": "SAGEHEALTH_PURPOSE",
                 "patients": "SAGEHEALTH_PATIENTS"}


def make_principal(role: str | None, *, user: str | None = None, purpose: str | None = None,
                   patients: str | Iterable[str] | None = None) -> Principal | None:
    """A principal from loose settings (CLI options, environment): ``None`` when no role is set;
    the user defaults to the login name, the purpose to the role's first purpose; ``patients``
    is a comma-separated list, ``@FILE`` (one id per line) or an iterable of ids."""
    if not role:
        return None
    if purpose is None or purpose == "":
        purpose = ROLE_PURPOSES.get(role, ("",))[0]
    if isinstance(patients, str):
        if patients.startswith("@"):
            try:
                with open(patients[1:], encoding="utf-8") as fh:
                    patients = [line.strip() for line in fh]
            except OSError as exc:
                raise AccessDenied(f"cannot read the care-team list {patients[1:]}: {exc.strerror}") from None
        else:
            patients = patients.split(",")
    ids = frozenset(p.strip() for p in patients or () if p and p.strip())
    return Principal(user or _login(), role, purpose, ids)


def principal_from_env(env: Mapping[str, str] | None = None) -> Principal | None:
    """The principal described by ``$SAGEHEALTH_ROLE`` (+ ``_USER``, ``_PURPOSE``, ``_PATIENTS``)."""
    env = os.environ if env is None else env
    return make_principal(env.get(PRINCIPAL_ENV["role"]), user=env.get(PRINCIPAL_ENV["user"]),
                          purpose=env.get(PRINCIPAL_ENV["purpose"]), patients=env.get(PRINCIPAL_ENV["patients"]))


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
