"""What every reader shares: the record types, the read context and parsing helpers."""

from __future__ import annotations

import gzip
from abc import ABC, abstractmethod
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, ClassVar

Row = dict[str, Any]


@dataclass(slots=True)
class Record:
    """One input record mapped to rows: ``[(table, row), ...]``.

    ``locator`` says where the record sits in its file (``line:12``, ``/entry/3/resource``,
    ``row:40``, a DICOM tag path). ``requires`` lists patient ids that must exist (in the store
    or earlier in the same run) for the record to be valid; when one never appears the record is
    quarantined as a dangling reference.
    """

    locator: str
    rows: list[tuple[str, Row]]
    requires: tuple[str, ...] = ()
    content: bytes | None = None  # the raw record, hashed into provenance when given


@dataclass(slots=True)
class Bad:
    """One input record that could not be read."""

    locator: str
    reason: str
    raw: str | None = None


Item = Record | Bad


@dataclass(slots=True)
class ReadContext:
    """What a reader may ask of the pipeline while it reads."""

    source_uri: str
    find_patient: Callable[[str], str | None] = lambda _v: None
    on_bytes: Callable[[int], None] = lambda _n: None
    options: dict[str, Any] = field(default_factory=dict)


class Reader(ABC):
    """Base class of the readers. Subclasses set ``name``/``version`` and implement ``read``."""

    name: ClassVar[str] = "reader"
    version: ClassVar[str] = "1"
    #: the source_system written on rows (a reader may override per row)
    source_system: ClassVar[str] = ""

    def files(self, path: Path) -> list[Path]:
        """The files of ``path`` this reader ingests, in the order they must be read."""
        return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())

    def order(self, files: list[Path]) -> list[Path]:
        """The order in which these files (found by format detection) must be read."""
        return sorted(files)

    @abstractmethod
    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        """Stream the items of one file."""

    # Readers whose files split into independent slices also implement ``split`` (in the main
    # process: yields picklable slices, reporting bytes read) and ``read_unit`` (in a worker:
    # the items of one slice); the pipeline then reads large files in worker processes.
    def splittable(self, path: Path) -> bool:
        """True when ``split``/``read_unit`` can read this file in independent slices."""
        return False


# -- helpers ------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for binary streaming, transparently gunzipping ``.gz`` content."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def open_text(path: Path) -> IO[str]:
    """Open a (possibly gzipped) text file as UTF-8, undecodable bytes replaced."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


_DT = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)


class BadValue(ValueError):
    """A field value that does not parse; readers turn it into a :class:`Bad`."""


def parse_datetime(value: Any, where: str = "") -> datetime | None:
    """Parse a FHIR/ISO date or dateTime (partial precision allowed) into a UTC datetime.

    A value without a zone is taken as UTC. Raises :class:`BadValue` naming ``where``.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadValue(f"{where}: expected a date/time string, got {type(value).__name__}")
    if len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:  # fast path (C): full dates and date-times with or without a zone
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass  # partial or invalid: the regex below says which
        else:
            return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    m = _DT.match(value.strip())
    if not m:
        raise BadValue(f"{where}: {value!r} is not a valid date/time")
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        tzinfo: timezone = UTC
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            tzd = tz[1:].replace(":", "")
            tzinfo = timezone(sign * timedelta(hours=int(tzd[:2]), minutes=int(tzd[2:])))
        us = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime(
            int(y), int(mo or 1), int(d or 1), int(hh or 0), int(mi or 0), int(ss or 0), us, tzinfo
        )
    except ValueError as exc:
        raise BadValue(f"{where}: {value!r} is not a valid date/time ({exc})") from exc
    return dt.astimezone(UTC)


def parse_date(value: Any, where: str = "") -> date | None:
    """Parse a date (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a dateTime) into a date."""
    dt = parse_datetime(value, where)
    return None if dt is None else dt.date()


def to_float(value: Any, where: str = "") -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadValue(f"{where}: expected a number, got a boolean")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"{where}: {value!r} is not a number") from exc


def to_int(value: Any, where: str = "") -> int | None:
    f = to_float(value, where)
    return None if f is None else int(f)


def reject_rows(rows: Iterator[list[str]], reason: str, header: list[str] | None = None) -> Iterator[Bad]:
    """Every data row of a CSV whose header makes it unreadable, each as a :class:`Bad` with
    ``reason`` (so that each input record is accounted for); a file without data rows gives one
    ``Bad("header")``."""
    n = 0
    for values in rows:
        if values:
            n += 1
            yield Bad(f"row:{n}", reason, clip(",".join(values)))
    if n == 0:
        yield Bad("header", reason, clip(",".join(header)) if header else None)


def clip(text: str | bytes | None, limit: int = 4096) -> str | None:
    """A raw record cut to ``limit`` characters for the quarantine table."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"
