"""SAGE-Health: a governed, versioned, searchable medical data ecosystem for generative AI.

The public surface::

    from sagehealth import Ecosystem
    eco = Ecosystem.open("./sage-data")
    summary = eco.ingest(["export/"])          # FHIR, OMOP, MIMIC, notes, DICOM, VCF, literature
    eco.sql("SELECT kind, count(*) FROM events GROUP BY kind")
    eco.trace("pat_...")                       # where a row came from
"""

from typing import TYPE_CHECKING, Any

from sagehealth.config import PIPELINE_VERSION as __version__
from sagehealth.errors import (
    ConfigError,
    IngestError,
    QueryError,
    RowNotFound,
    SageHealthError,
    SourceNotFound,
    StoreError,
    StoreLocked,
    UnknownFormat,
    VersionNotFound,
)

if TYPE_CHECKING:
    from sagehealth.ecosystem import Ecosystem


def __getattr__(name: str) -> Any:
    # Ecosystem pulls in LanceDB and DuckDB; import it on first use so that light modules
    # (readers, the ingest worker processes) start fast.
    if name == "Ecosystem":
        from sagehealth.ecosystem import Ecosystem

        return Ecosystem
    raise AttributeError(f"module 'sagehealth' has no attribute {name!r}")


__all__ = [
    "Ecosystem",
    "SageHealthError",
    "ConfigError",
    "StoreError",
    "VersionNotFound",
    "RowNotFound",
    "StoreLocked",
    "QueryError",
    "IngestError",
    "SourceNotFound",
    "UnknownFormat",
    "__version__",
]
