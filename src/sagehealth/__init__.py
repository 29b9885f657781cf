"""SAGE-Health: a governed, versioned, searchable medical data ecosystem for generative AI.

The public surface::

    from sagehealth import Ecosystem
    eco = Ecosystem.open("./sage-data", principal)   # every call checked and audited
    summary = eco.ingest(["export/"])          # FHIR, OMOP, MIMIC, notes, DICOM, VCF, literature
    eco.sql("SELECT kind, count(*) FROM events GROUP BY kind")
    eco.search("spiculated lung mass")         # hybrid BM25 + vector search over chunks
    eco.trace("pat_...")                       # where a row came from
"""

import os

# OpenMP threads (the embedding engine) that spin while they wait make a busy 2-core machine
# crawl: a one-line query took 1-2 s instead of 25 ms beside another busy process. The setting
# must be in place before any library loads the OpenMP runtime, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Lance's index statistics (read once per table version to learn the IVF list count) include
# every centroid unless told not to, and warn about it on stderr at each read
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

from typing import TYPE_CHECKING, Any  # noqa: E402

from sagehealth.config import PIPELINE_VERSION as __version__  # noqa: E402
from sagehealth.errors import (  # noqa: E402
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
