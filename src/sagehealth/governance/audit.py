"""The audit log: append-only JSON lines, each entry chained to the previous by a keyed MAC.

Every access (who, role, purpose, action, resource, patients, allowed or denied, why) is one
line. An entry's ``hash`` is the HMAC-SHA256, under the *audit key*, of the previous entry's
hash and the entry's own canonical JSON; ``seq`` counts from 1. The key does not live in the
store (``$SAGEHEALTH_AUDIT_KEY``, else the file ``$SAGEHEALTH_AUDIT_KEY_FILE``, else
``~/.config/sagehealth/audit.key``, created 0600 on first use), so whoever can write the store
folder cannot rewrite an entry and recompute the chain. Entries written before keys existed
(plain SHA-256, no ``alg``) still verify as a prefix; the first keyed entry seals them.

Tamper evidence beyond the chain:

- ``audit.head`` holds the last entry's (seq, hash); an append first checks that the log still
  ends there, so a cut tail is refused, not healed by the next entry.
- every lakehouse commit records the head (``anchor``), so deleting or emptying the audit folder
  of a store that has versions is refused, and a log that ends before an anchored entry, or
  holds another entry there, fails verification.
- :meth:`AuditLog.anchor` is the head to copy to a write-once location; :meth:`verify` checks
  such external anchors too.
- :meth:`verify` only reads; a broken log blocks every audited access (the library fails
  closed) until an auditor restarts it with :meth:`restart`, which keeps the broken log as
  evidence and begins the new chain with an entry that says why.

Appends take an exclusive file lock and are fsync'ed, so concurrent writers cannot interleave
or lose entries.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagehealth.errors import AuditError, ConfigError
from sagehealth.governance.policy import Principal

GENESIS = "0" * 64
FIELDS = ("seq", "at", "user", "role", "purpose", "action", "resource", "patients", "allowed",
          "reason", "prev")
KEY_ENV = "SAGEHEALTH_AUDIT_KEY"
KEY_FILE_ENV = "SAGEHEALTH_AUDIT_KEY_FILE"
#: the action of the first entry of a log restarted after tampering
RESTART = "audit_restart"


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "sagehealth" / "audit.key"


def audit_key(store: str | os.PathLike[str] | None = None) -> bytes:
    """The audit key: ``$SAGEHEALTH_AUDIT_KEY`` (at least 16 characters), else the contents of
    ``$SAGEHEALTH_AUDIT_KEY_FILE`` or the default key file (created with a random key, mode
    0600, when missing). A key file inside ``store`` is refused: the key must not live beside
    the log it protects."""
    raw = os.environ.get(KEY_ENV)
    if raw:
        if len(raw.encode()) < 16:
            raise ConfigError(f"the audit key in {KEY_ENV} is too short (at least 16 characters)")
        return raw.encode()
    path = Path(os.environ.get(KEY_FILE_ENV) or default_key_file()).expanduser().resolve()
    if store is not None and path.is_relative_to(Path(store).resolve()):
        raise ConfigError(f"the audit key file {path} lies inside the store {store}: keep it elsewhere "
                          f"(set {KEY_FILE_ENV} or {KEY_ENV})")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        except FileExistsError:  # another process made it first
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the audit key file {path}: {exc}; set {KEY_ENV}") from exc
    try:
        key = path.read_text().strip().encode()
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key file {path}: {exc}") from exc
    if len(key) < 16:
        raise ConfigError(f"the audit key in {path} is too short (at least 16 characters)")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (which key wrote an entry; not the key)."""
    return hashlib.sha256(b"sagehealth audit key id\x00" + key).hexdigest()[:12]


@dataclass(frozen=True)
class AuditEntry:
    """One access, allowed or denied."""

    seq: int
    at: str
    user: str
    role: str
    purpose: str
    action: str
    resource: str
    patients: list[str]
    allowed: bool
    reason: str
    prev: str
    hash: str = ""
    alg: str = ""  # "hmac-sha256:<key id>"; "" for entries from before keyed chains

    def digest(self, key: bytes | None) -> str:
        body: dict[str, Any] = {k: getattr(self, k) for k in FIELDS}
        if self.alg:
            body["alg"] = self.alg
        raw = (self.prev + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).encode()
        if not self.alg:
            return hashlib.sha256(raw).hexdigest()
        if key is None:
            raise AuditError("a keyed audit entry needs the audit key")
        return hmac.new(key, raw, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """A point of the chain recorded elsewhere: entry ``seq`` has ``hash`` (``where`` says where
    it was recorded: a store version, a file)."""

    seq: int
    hash: str
    where: str = ""


@dataclass(frozen=True)
class StoreAnchors:
    """What the store recorded of the log: the anchors of its commits since the log was last
    restarted, and whether it has versions a log must account for."""

    anchors: list[Anchor]
    has_versions: bool


@dataclass
class Verification:
    """The result of :meth:`AuditLog.verify`: ``ok``, how many entries, and the first problem
    with its line number (1-based) when not ok."""

    ok: bool
    entries: int
    problem: str | None = None
    line: int | None = None
    details: dict[str, object] = field(default_factory=dict)


def _seq(line: str) -> int | None:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return None


_TYPES: dict[str, type | tuple[type, ...]] = {
    "seq": int, "at": str, "user": str, "role": str, "purpose": str, "action": str, "resource": str,
    "patients": list, "allowed": bool, "reason": str, "prev": str, "hash": str, "alg": str}


def _entry(line: str | bytes) -> AuditEntry:
    """One entry, every field of the type it must have (ValueError otherwise)."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    for k, v in data.items():
        want = _TYPES.get(k)
        if want is None or not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ValueError(f"field {k!r} is missing its type")
    if any(not isinstance(p, str) for p in data.get("patients", [])):
        raise ValueError("patients must be strings")
    return AuditEntry(**data)


def _clean(value: str) -> str:
    """Text an entry can hold: lone surrogates (from undecodable input) become escapes, so the
    entry is written (and audited) instead of failing to encode."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class AuditLog:
    """An append-only, keyed, hash-chained audit log in ``folder`` (``audit.jsonl`` +
    ``audit.head``). ``anchors`` returns what the store recorded of the log (see
    :class:`StoreAnchors`); ``key`` defaults to :func:`audit_key`."""

    def __init__(self, folder: str | os.PathLike[str], *, key: bytes | None = None,
                 anchors: Callable[[int], StoreAnchors] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "audit.jsonl"
        self.head_path = self.folder / "audit.head"
        self._key = key
        self._anchors = anchors
        self._checked = False

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = audit_key(self.folder.parent)
        return self._key

    @property
    def alg(self) -> str:
        return f"hmac-sha256:{key_id(self.key)}"

    # -- writing --------------------------------------------------------------------------
    def record(self, principal: Principal | None, action: str, resource: str, *, allowed: bool,
               patients: Iterable[str] = (), reason: str = "") -> AuditEntry:
        """Append one entry (under an exclusive lock) and return it; ``principal`` None records an
        attempt by nobody identified (always a denial). Refused (AuditError) when the log no
        longer ends where it did, or the store recorded entries the log lacks."""
        key, alg = self.key, self.alg
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path, "a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    seq, prev = self._tail(fh)
                    self._check_end(seq, prev)
                    entry = AuditEntry(
                        seq=seq + 1, at=datetime.now(UTC).isoformat(timespec="microseconds"),
                        user=_clean(principal.user) if principal else "(none)",
                        role=_clean(principal.role) if principal else "(none)",
                        purpose=_clean(principal.purpose) if principal else "(none)",
                        action=_clean(action), resource=_clean(resource),
                        patients=sorted({_clean(p) for p in patients}),
                        allowed=allowed, reason=_clean(reason), prev=prev, alg=alg,
                    )
                    entry = AuditEntry(**{**asdict(entry), "hash": entry.digest(key)})
                    self._append(fh, entry)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc}") from exc
        return entry

    def _append(self, fh: Any, entry: AuditEntry) -> None:
        fh.seek(0, os.SEEK_END)
        fh.write((json.dumps(asdict(entry), sort_keys=True, ensure_ascii=False) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())
        tmp = self.head_path.with_suffix(".head.tmp")
        tmp.write_text(json.dumps({"seq": entry.seq, "hash": entry.hash}))
        os.replace(tmp, self.head_path)

    def _check_end(self, seq: int, last: str) -> None:
        """Refuse to append to a log that was cut, emptied or deleted (the check against the
        store's anchors runs once per process; the head is checked on every append)."""
        hint = "; an auditor can check it with `sagehealth audit verify` and restart it with `sagehealth audit restart`"
        head = self._head()
        if head is None and seq:
            raise AuditError(f"the audit log's head ({self.head_path.name}) is missing{hint}")
        if head is not None and (head["seq"], head["hash"]) != (seq, last):
            raise AuditError(f"the audit log ends at entry {seq} but entry {head['seq']} was written "
                             f"(entries removed or rewritten){hint}")
        if self._checked or self._anchors is None:
            return
        recorded = self._anchors(self._restart_version())
        if seq == 0 and recorded.has_versions:
            raise AuditError(f"the store has versions but its audit log is empty or missing{hint}")
        for a in recorded.anchors:
            if a.seq > seq:
                raise AuditError(f"the audit log ends at entry {seq} but {a.where} recorded entry {a.seq}{hint}")
            if a.seq == seq and a.hash != last:
                raise AuditError(f"entry {seq} is not the one {a.where} recorded{hint}")
        self._checked = True

    def _head(self) -> dict[str, Any] | None:
        try:
            head = json.loads(self.head_path.read_text())
            return {"seq": int(head["seq"]), "hash": str(head["hash"])}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise AuditError(f"the audit log's head {self.head_path} is unreadable ({exc})") from exc

    def _restart_version(self) -> int:
        """The store version at which the log was last restarted (0: never): anchors recorded
        before it belong to the log kept as evidence."""
        try:
            with open(self.path, "rb") as fh:
                first = _entry(fh.readline())
        except (OSError, ValueError, TypeError):
            return 0
        # only a keyed restart entry that verifies counts: anyone can write the word "restart"
        if first.action == RESTART and first.seq == 1 and first.prev == GENESIS and first.alg == self.alg \
                and hmac.compare_digest(first.hash, first.digest(self.key)):
            try:
                return int(first.resource.split("store version ", 1)[1].split()[0].rstrip(";,."))
            except (IndexError, ValueError):
                return 0
        return 0

    @staticmethod
    def _tail(fh: Any) -> tuple[int, str]:
        """(seq, hash) of the last entry, read backwards from the end of the file in blocks until
        the whole last line is in hand (an entry may be far longer than one block)."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return 0, GENESIS
        buf, pos = b"", size
        while pos > 0:
            step = min(pos, 65536)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            body = buf.rstrip(b"\n")
            if b"\n" in body or pos == 0:
                last = body.rsplit(b"\n", 1)[-1]
                break
        try:
            entry = _entry(last)
            return entry.seq, entry.hash
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"the last entry of {fh.name} is unreadable; an auditor can check the log with "
                             "`sagehealth audit verify`") from exc

    def head(self) -> Anchor | None:
        """The last entry's (seq, hash), as the head file says (None for an empty log)."""
        head = self._head()
        return Anchor(head["seq"], head["hash"], "audit.head") if head else None

    def restart(self, principal: Principal, problem: str, store_version: int) -> AuditEntry:
        """Keep the broken log (and head) as evidence under a new name and start a new chain
        whose first entry says who restarted it, at which store version, and why."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = []
        for p in (self.path, self.head_path):
            if p.exists():
                target = p.with_name(f"{p.name}.broken-{stamp}")
                os.replace(p, target)
                kept.append(target.name)
        digest = hashlib.sha256(self.folder.joinpath(kept[0]).read_bytes()).hexdigest() if kept and \
            kept[0].startswith("audit.jsonl") else "none"
        self._checked = True  # the anchors before this version belong to the kept log
        return self.record(principal, RESTART,
                           f"audit log restarted at store version {store_version}; the previous log was kept as "
                           f"{', '.join(kept) or '(nothing: it was gone)'} (sha256 {digest})",
                           allowed=True, reason=problem[:500])

    # -- reading --------------------------------------------------------------------------
    def entries(self) -> Iterator[AuditEntry]:
        """Every entry, oldest first (streamed)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    yield _entry(line)
                except (ValueError, TypeError) as exc:
                    raise AuditError(f"{self.path}:{n}: unreadable audit entry ({exc})") from exc

    def verify(self, anchors: Iterable[Anchor] = ()) -> Verification:
        """Recompute the chain under the key and check it against the head, the store's anchors
        and ``anchors`` (e.g. read from a write-once copy); the first edited, removed,
        reordered or cut entry is reported. Writes nothing."""
        key = self.key
        mine = key_id(key)
        wanted = {a.seq: a for a in anchors}
        if self._anchors is not None:
            recorded = self._anchors(self._restart_version())
            for a in recorded.anchors:
                wanted.setdefault(a.seq, a)
        else:
            recorded = StoreAnchors([], False)
        if not self.path.exists() or self.path.stat().st_size == 0:
            if recorded.has_versions or wanted:
                last = max(wanted.values(), key=lambda a: a.seq, default=None)
                return Verification(False, 0, "the audit log is empty or missing but the store has versions"
                                    + (f" ({last.where} recorded entry {last.seq})" if last else ""), 1)
            return Verification(True, 0)
        prev, expected, n, keyed = GENESIS, 1, 0, 0
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    entry = _entry(line)
                except (ValueError, TypeError):
                    return Verification(False, n - 1, f"line {n} is not a valid audit entry", n)
                if entry.seq != expected:
                    later = {_seq(rest) for rest in fh}  # read on only to tell a move from a loss
                    if entry.seq < expected or expected in later:
                        what = f"entries reordered: entry {entry.seq} stands where entry {expected} belongs"
                    else:
                        what = f"{entry.seq - expected} entries removed before entry {entry.seq}"
                    return Verification(False, n - 1, what, n, {"expected_seq": expected, "found_seq": entry.seq})
                if entry.alg and entry.alg != f"hmac-sha256:{mine}":
                    return Verification(False, n - 1, f"entry {entry.seq} was written with another audit key "
                                        f"({entry.alg}; this key is {mine}): set {KEY_ENV} to the store's key", n)
                if not entry.alg and keyed:  # a legacy prefix is sealed by the first keyed entry's MAC
                    return Verification(False, n - 1, f"entry {entry.seq} is unkeyed after keyed entries "
                                        "(written without the audit key)", n)
                if not hmac.compare_digest(entry.hash, entry.digest(key)):
                    return Verification(False, n - 1, f"entry {entry.seq} was edited (its hash does not match)", n)
                if entry.prev != prev:
                    return Verification(False, n - 1, f"entry {entry.seq} does not follow the entry before it", n)
                a = wanted.get(entry.seq)
                if a is not None and a.hash != entry.hash:
                    return Verification(False, n - 1, f"entry {entry.seq} is not the one {a.where} recorded "
                                        "(the log was rewritten)", n)
                keyed += bool(entry.alg)
                prev, expected = entry.hash, expected + 1
        last = expected - 1
        beyond = [a for a in wanted.values() if a.seq > last]
        if beyond:
            a = max(beyond, key=lambda a: a.seq)
            return Verification(False, n, f"the log ends at entry {last} but {a.where} recorded entry {a.seq} "
                                "(entries removed from the end)", n + 1)
        try:
            head = self._head()
        except AuditError as exc:
            return Verification(False, n, str(exc), n + 1)
        if head is None:
            return Verification(False, n, f"the log's head ({self.head_path.name}) is missing", n + 1)
        if head["seq"] != last or head["hash"] != prev:
            return Verification(
                False, n, f"the log ends at entry {last} but entry {head['seq']} was written "
                "(entries removed from the end)", n + 1,
            )
        return Verification(True, n, details={"keyed": keyed, "unkeyed": n - keyed, "anchors": len(wanted),
                                               "key_id": mine})
