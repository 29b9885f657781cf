"""The audit log: append-only JSON lines, each entry chained to the previous by SHA-256.

Every access (who, role, purpose, action, resource, patients, allowed or denied, why) is one
line. An entry's ``hash`` is the SHA-256 of the previous entry's hash and the entry's own
canonical JSON; ``seq`` counts from 1. :meth:`AuditLog.verify` recomputes the chain and says
where it breaks: an edited entry (its hash no longer matches), a removed entry (a gap in
``seq``), reordered entries (``seq`` going back) or a cut tail (the log ends before the
head recorded in ``audit.head``, which every append updates). Appends take an exclusive file
lock and are fsync'ed, so concurrent writers cannot interleave or lose entries.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sagehealth.errors import AuditError
from sagehealth.governance.policy import Principal

GENESIS = "0" * 64
FIELDS = ("seq", "at", "user", "role", "purpose", "action", "resource", "patients", "allowed",
          "reason", "prev")


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

    def digest(self) -> str:
        body = {k: getattr(self, k) for k in FIELDS}
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256((self.prev + raw).encode("utf-8")).hexdigest()


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


class AuditLog:
    """An append-only, hash-chained audit log in ``folder`` (``audit.jsonl`` + ``audit.head``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "audit.jsonl"
        self.head_path = self.folder / "audit.head"

    # -- writing --------------------------------------------------------------------------
    def record(self, principal: Principal | None, action: str, resource: str, *, allowed: bool,
               patients: Iterable[str] = (), reason: str = "") -> AuditEntry:
        """Append one entry (under an exclusive lock) and return it; ``principal`` None records an
        attempt by nobody identified (always a denial)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    seq, prev = self._tail(fh)
                    entry = AuditEntry(
                        seq=seq + 1, at=datetime.now(UTC).isoformat(timespec="microseconds"),
                        user=principal.user if principal else "(none)",
                        role=principal.role if principal else "(none)",
                        purpose=principal.purpose if principal else "(none)",
                        action=action, resource=resource, patients=sorted(set(patients)),
                        allowed=allowed, reason=reason, prev=prev,
                    )
                    entry = AuditEntry(**{**asdict(entry), "hash": entry.digest()})
                    fh.seek(0, os.SEEK_END)
                    fh.write((json.dumps(asdict(entry), sort_keys=True, ensure_ascii=False) + "\n").encode())
                    fh.flush()
                    os.fsync(fh.fileno())
                    tmp = self.head_path.with_suffix(".head.tmp")
                    tmp.write_text(json.dumps({"seq": entry.seq, "hash": entry.hash}))
                    os.replace(tmp, self.head_path)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc}") from exc
        return entry

    @staticmethod
    def _tail(fh) -> tuple[int, str]:  # noqa: ANN001 - a binary file
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
            entry = json.loads(last)
            return int(entry["seq"]), str(entry["hash"])
        except (ValueError, KeyError) as exc:
            raise AuditError(f"the last entry of {fh.name} is unreadable; run `sagehealth audit verify`") from exc

    # -- reading --------------------------------------------------------------------------
    def entries(self) -> Iterator[AuditEntry]:
        """Every entry, oldest first (streamed)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    yield AuditEntry(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise AuditError(f"{self.path}:{n}: unreadable audit entry ({exc})") from exc

    def verify(self) -> Verification:
        """Recompute the chain; the first edited, removed, reordered or cut entry is reported."""
        if not self.path.exists():
            return Verification(ok=True, entries=0)
        prev, expected, n = GENESIS, 1, 0
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    entry = AuditEntry(**json.loads(line))
                except (ValueError, TypeError):
                    return Verification(False, n - 1, f"line {n} is not a valid audit entry", n)
                if entry.seq != expected:
                    later = {_seq(rest) for rest in fh}  # read on only to tell a move from a loss
                    if entry.seq < expected or expected in later:
                        what = f"entries reordered: entry {entry.seq} stands where entry {expected} belongs"
                    else:
                        what = f"{entry.seq - expected} entries removed before entry {entry.seq}"
                    return Verification(False, n - 1, what, n, {"expected_seq": expected, "found_seq": entry.seq})
                if entry.hash != entry.digest():
                    return Verification(False, n - 1, f"entry {entry.seq} was edited (its hash does not match)", n)
                if entry.prev != prev:
                    return Verification(False, n - 1, f"entry {entry.seq} does not follow the entry before it", n)
                prev, expected = entry.hash, expected + 1
        if self.head_path.exists():
            head = json.loads(self.head_path.read_text())
            if head.get("seq") != expected - 1 or head.get("hash") != prev:
                return Verification(
                    False, n, f"the log ends at entry {expected - 1} but entry {head.get('seq')} was written "
                    "(entries removed from the end)", n + 1,
                )
        return Verification(True, n)
