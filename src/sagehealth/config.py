"""Settings: where the store lives and pipeline constants."""

from __future__ import annotations

import os
from pathlib import Path

PIPELINE_VERSION = "0.1.0"
HOME_ENV = "SAGEHEALTH_HOME"
DEFAULT_HOME = "./sage-data"


def resolve_home(home: str | os.PathLike[str] | None = None) -> str:
    """The store location: ``home`` if given, else ``$SAGEHEALTH_HOME``, else ``./sage-data``.

    Local paths are made absolute; object-store URIs (``s3://``, ``gs://``, ``az://``) pass
    through unchanged to Lance.
    """
    value = str(home) if home else os.environ.get(HOME_ENV) or DEFAULT_HOME
    if "://" in value and not value.startswith("file://"):
        return value
    if value.startswith("file://"):
        value = value[len("file://") :]
    return str(Path(value).expanduser().resolve())


def is_local(uri: str) -> bool:
    """True when ``uri`` is a local folder rather than an object-store URI."""
    return "://" not in uri


def audit_folder(uri: str) -> str:
    """Where the audit log of the store at ``uri`` lives (``<home>/audit``)."""
    return f"{uri.rstrip('/')}/audit"


SQL_TIMEOUT_ENV = "SAGEHEALTH_SQL_TIMEOUT"
SQL_MEMORY_ENV = "SAGEHEALTH_SQL_MEMORY"
#: seconds a SQL query may run through any door unless it asks for less (or the setting says)
DEFAULT_SQL_TIMEOUT = 120.0


def sql_timeout() -> float:
    """The default SQL timeout in seconds (``$SAGEHEALTH_SQL_TIMEOUT``, else 120)."""
    from sagehealth.errors import ConfigError

    raw = os.environ.get(SQL_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_SQL_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{SQL_TIMEOUT_ENV} must be a number of seconds (got {raw!r})") from None
    if value <= 0:
        raise ConfigError(f"{SQL_TIMEOUT_ENV} must be positive (got {raw!r})")
    return value


def sql_memory_limit() -> str:
    """DuckDB's memory limit for SQL queries: ``$SAGEHEALTH_SQL_MEMORY`` (e.g. ``4GB``), else
    half of this machine's memory (DuckDB's own default, 80%, leaves too little for the rest)."""
    raw = os.environ.get(SQL_MEMORY_ENV)
    if raw:
        if not raw.replace(".", "").replace(" ", "").rstrip("KMGTiBkmgtib").isdigit():
            from sagehealth.errors import ConfigError

            raise ConfigError(f"{SQL_MEMORY_ENV} must be a size such as 4GB or 512MiB (got {raw!r})")
        return raw.replace(" ", "")
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "4GB"
    return f"{max(total // 2 // 2**20, 256)}MiB"
