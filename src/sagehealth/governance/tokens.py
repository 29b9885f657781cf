"""Bearer tokens for the network doors (REST, MCP over HTTP), mapped to principals.

A token is 32 random bytes (URL-safe base64), shown once when issued. The store keeps only its
SHA-256 in ``<home>/tokens.json`` (file mode 0600) with the principal it stands for, when it
was issued and a label; revoking removes the entry. Issuing and revoking are configuration
actions (data stewards: ``Ecosystem.issue_token``)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagehealth.errors import ConfigError
from sagehealth.governance.policy import Principal

PREFIX = "sht_"


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value ("" when there is none)."""
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Hashed tokens of the store at ``home`` (re-read when the file changes)."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home) / "tokens.json"
        self._cache: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)  # every rewrite is a new file (os.replace)
        with self._lock:
            if self._cache and self._cache[0] == stamp:
                return self._cache[1]
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"the token file {self.path} is unreadable: {exc}") from exc
            self._cache = (stamp, data)
            return data

    def _update(self, change: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = dict(self._load())
            change(data)
            tmp = self.path.with_suffix(".tmp")
            with open(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def issue(self, principal: Principal, *, label: str = "") -> str:
        """A new token for ``principal`` (returned once; only its hash is stored)."""
        token = PREFIX + secrets.token_urlsafe(32)
        entry = {"user": principal.user, "role": principal.role, "purpose": principal.purpose,
                 "patients": sorted(principal.patients), "label": label,
                 "issued_at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._update(lambda d: d.__setitem__(digest(token), entry))
        return token

    def revoke(self, token_or_id: str) -> bool:
        """Remove a token, given itself, its hash or the id ``list`` shows (a hash prefix of at
        least 12 characters that names one token); False when none matches."""
        if token_or_id.startswith(PREFIX):
            keys = [digest(token_or_id)]
        else:
            keys = [k for k in self._load() if len(token_or_id) >= 12 and k.startswith(token_or_id.lower())]
        if len(keys) != 1 or keys[0] not in self._load():
            return False
        self._update(lambda d: d.pop(keys[0], None))
        return True

    def principal(self, token: str) -> Principal | None:
        """The principal a token stands for, or None for an unknown or revoked token."""
        entry = self._load().get(digest(token))
        if entry is None:
            return None
        return Principal(entry["user"], entry["role"], entry["purpose"], frozenset(entry.get("patients") or ()))

    def list(self) -> list[dict[str, Any]]:
        """Issued tokens (hash prefix, principal, label, time): never the tokens themselves."""
        return [{"id": k[:12], **{f: v for f, v in e.items() if f != "patients"}, "patients": len(e.get("patients") or [])}
                for k, e in sorted(self._load().items(), key=lambda kv: kv[1].get("issued_at", ""))]
