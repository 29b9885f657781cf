"""SQL text for DuckDB queries and Lance filters: string literals and IN lists, quoted once here."""

from __future__ import annotations

from collections.abc import Iterable


def lit(value: object) -> str:
    """A single-quoted SQL string literal (quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def in_list(values: Iterable[object]) -> str:
    """``'a', 'b', ...`` for ``col IN (...)``."""
    return ", ".join(lit(v) for v in values)
