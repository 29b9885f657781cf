"""SAGE-Health: a governed, versioned, searchable medical data ecosystem for generative AI.

The public surface::

    from sagehealth import Ecosystem
    eco = Ecosystem.open("./sage-data")
    summary = eco.ingest(["export/"])          # FHIR, OMOP, MIMIC, notes, DICOM, VCF, literature
    eco.sql("SELECT kind, count(*) FROM events GROUP BY kind")
    eco.trace("pat_...")                       # where a row came from
"""

from sagehealth.config import PIPELINE_VERSION as __version__
from sagehealth.ecosystem import Ecosystem
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
