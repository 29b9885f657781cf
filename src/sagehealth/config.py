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
