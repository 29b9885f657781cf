"""Governance: who may do what (principals, roles, purposes) and a tamper-evident audit log.

These are the building blocks the library's doors will call below every read and write; see
``policy.authorize`` and ``audit.AuditLog``.
"""

from sagehealth.governance.audit import AuditEntry, AuditLog, Verification
from sagehealth.governance.policy import ACTIONS, ROLES, Principal, authorize

__all__ = ["ACTIONS", "ROLES", "AuditEntry", "AuditLog", "Principal", "Verification", "authorize"]
