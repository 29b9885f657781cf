"""Streaming CSV tables (OMOP CDM and MIMIC-IV extracts): rows with lower-cased columns,
table names from file names, required values, memoised date parsing."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from sagehealth.data.sources.base import Bad, BadValue, ReadContext, clip, parse_datetime, reject_rows


def table_name(path: Path) -> str:
    """The lower-case table name of ``PERSON.csv``, ``person.csv.gz`` -> ``person``."""
    name = path.name.lower()
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name


def iter_csv(
    path: Path, required: Iterable[str] = (), ctx: ReadContext | None = None
) -> Iterator[tuple[int, dict[str, str], str] | Bad]:
    """Stream a (possibly gzipped) CSV as ``(n, row, raw)`` with lower-cased column names.

    ``n`` is the 1-based data row number, ``raw`` the row's fields joined by commas. When a
    ``required`` column is missing every row is a ``Bad`` saying so; a row with the wrong
    number of fields is a ``Bad``. Blank lines are not records. Reports compressed bytes read
    through ``ctx.on_bytes`` every 4096 rows.
    """
    raw = open(path, "rb")
    try:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        binary = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lower() for h in header]
        header[0] = header[0].lstrip("\ufeff")
        missing = [c for c in required if c not in header]
        if missing:
            yield from reject_rows(
                reader, f"missing required column(s) in the header: {', '.join(missing)}", header)
            return
        width, n, done = len(header), 0, 0
        for values in reader:
            if not values:
                continue
            n += 1
            line = ",".join(values)
            if len(values) != width:
                yield Bad(f"row:{n}", f"row has {len(values)} fields, header has {width}",
                          clip(line))
                continue
            yield n, dict(zip(header, values)), line
            if ctx is not None and not n & 4095:
                pos = raw.tell()
                ctx.on_bytes(pos - done)
                done = pos
        if ctx is not None:
            ctx.on_bytes(raw.tell() - done)
    finally:
        raw.close()


def required_str(r: dict[str, str], col: str) -> str:
    """The value of ``col``, raising :class:`BadValue` when empty."""
    v = r.get(col, "")
    if not v:
        raise BadValue(f"{col}: missing required value")
    return v


#: parse_datetime memoised: timestamps repeat a lot (one lab panel, one visit day)
cached_datetime = lru_cache(maxsize=1 << 16)(parse_datetime)
