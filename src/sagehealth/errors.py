"""The SAGE-Health exception tree, in one place.

    SageHealthError                 base of everything the library raises on purpose
    ├── ConfigError                 bad or missing configuration (home folder, settings)
    ├── StoreError                  the lakehouse cannot be opened, read or written
    │   ├── VersionNotFound         a time-travel version that does not exist
    │   ├── RowNotFound             a row id that no table holds
    │   └── StoreLocked             another process is writing to the same store
    ├── QueryError                  SQL that DuckDB rejects (message says where)
    │   └── ReportError             a radiology draft or sign-off with bad input (says what)
    ├── AccessDenied                a principal may not do this (the audit log records it)
    ├── AuditError                  the audit log cannot be written or read
    ├── ToolError                   an agent tool call that cannot run
    │   ├── UnknownTool             no tool of that name in the registry
    │   └── ToolArgumentError       arguments that do not match the tool's schema (says which)
    ├── ProviderError               a model provider that fails (message says which and why)
    │   ├── ProviderUnavailable     the endpoint is down or the model file cannot be loaded
    │   ├── ProviderTimeout         the model did not answer in time
    │   └── ProviderResponseError   the model answered with garbage or an HTTP error
    ├── RetrievalError              a search or an index that cannot run (bad filter, bad query)
    │   ├── EmbedderError           an embedding model that cannot load or answers wrongly
    │   └── VocabularyError         a vocabulary file in no known format, or a concept not loaded
    └── IngestError                 an ingest that cannot start (bad path, unknown format)
        ├── SourceNotFound          a path that does not exist
        └── UnknownFormat           no reader recognises the file

Bad *records* never raise: they are quarantined with a reason and a locator, and the rest of
the batch goes on. These exceptions are for problems that stop a whole command. The CLI turns
each into a one-line message and a non-zero exit code (see ``cli.py``).
"""

from __future__ import annotations


class SageHealthError(Exception):
    """Base class for every error SAGE-Health raises on purpose."""


class ConfigError(SageHealthError):
    """Configuration is missing or invalid."""


class StoreError(SageHealthError):
    """The lakehouse cannot be opened, read or written."""


class VersionNotFound(StoreError):
    """A requested store version does not exist."""


class RowNotFound(StoreError):
    """No table holds the requested row id."""


class StoreLocked(StoreError):
    """Another process holds the write lock of the store."""


class QueryError(SageHealthError):
    """A SQL query failed."""


class ReadOnlyViolation(QueryError):
    """A statement that would write (or run anything but SELECT) sent through a read-only door;
    audited as a denial."""


class ReportError(QueryError):
    """A radiology draft or sign-off that cannot be made from what was given (empty findings
    or impression, an oversized text, a draft that was already signed by its draft id)."""


class AccessDenied(SageHealthError):
    """A principal is not allowed an action; the message says who, what and why."""


class AuditError(SageHealthError):
    """The audit log cannot be written or read."""


class ToolError(SageHealthError):
    """An agent tool call cannot run."""


class UnknownTool(ToolError):
    """No tool of that name is registered."""


class ToolArgumentError(ToolError):
    """The arguments of a tool call do not match its schema; the message names each field."""


class ProviderError(SageHealthError):
    """A model provider failed; the message names the provider and the cause."""


class ProviderUnavailable(ProviderError):
    """The model endpoint is down or refuses connections, or a model file cannot be loaded."""


class ProviderTimeout(ProviderError):
    """The model did not answer within its time limit."""


class ProviderResponseError(ProviderError):
    """The model answered with an HTTP error or a body that is not a valid chat completion."""


class RetrievalError(SageHealthError):
    """A search or an index build cannot run; the message says what to change."""


class EmbedderError(RetrievalError):
    """An embedding model cannot be loaded, is unreachable or answers with the wrong shape."""


class VocabularyError(RetrievalError):
    """A vocabulary file cannot be read, or a concept is not in the loaded vocabularies."""


class EngineError(SageHealthError):
    """The distributed engine (Ray) is not installed, cannot start or cannot be reached."""


class IngestError(SageHealthError):
    """An ingest cannot start."""


class SourceNotFound(IngestError):
    """An input path does not exist."""


class UnknownFormat(IngestError):
    """No reader recognises the input."""


__all__ = [
    "SageHealthError",
    "ConfigError",
    "StoreError",
    "VersionNotFound",
    "RowNotFound",
    "StoreLocked",
    "QueryError",
    "ReportError",
    "AccessDenied",
    "AuditError",
    "ToolError",
    "UnknownTool",
    "ToolArgumentError",
    "ProviderError",
    "ProviderUnavailable",
    "ProviderTimeout",
    "ProviderResponseError",
    "RetrievalError",
    "EmbedderError",
    "VocabularyError",
    "EngineError",
    "IngestError",
    "SourceNotFound",
    "UnknownFormat",
]
