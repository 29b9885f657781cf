"""The common clinical model: one Arrow schema per lakehouse table.

Every source (FHIR, OMOP, MIMIC, notes, DICOM, VCF, literature) maps into these tables. Codes
keep their system (a FHIR URI or an OMOP/MIMIC vocabulary id), code and display. Every data row
carries ``row_id`` (globally unique; its prefix names the table) and ``provenance_id`` (a row of
the ``provenance`` table: source file, sha256, locator, reader, pipeline version, ingest run).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

CODE = pa.struct([("system", pa.string()), ("code", pa.string()), ("display", pa.string())])
IDENTIFIER = pa.struct([("system", pa.string()), ("value", pa.string()), ("type", pa.string())])
TELECOM = pa.struct([("system", pa.string()), ("value", pa.string()), ("use", pa.string())])
SECTION = pa.struct([("name", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
TS = pa.timestamp("us", tz="UTC")


def _f(name: str, typ: pa.DataType = pa.string()) -> pa.Field:
    return pa.field(name, typ)


def _with_common(prefix: list[pa.Field], body: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        [_f("row_id"), *prefix, *body, _f("source_system"), _f("provenance_id")]
    )


ADDRESS = [_f("address_line"), _f("city"), _f("state"), _f("postal_code"), _f("country")]

SCHEMAS: dict[str, pa.Schema] = {
    "patients": _with_common(
        [_f("patient_id")],
        [
            _f("identifiers", pa.list_(IDENTIFIER)),
            _f("family_name"),
            _f("given_names"),
            _f("gender"),
            _f("birth_date", pa.date32()),
            _f("deceased", pa.bool_()),
            _f("deceased_at", TS),
            _f("race"),
            _f("ethnicity"),
            _f("marital_status"),
            _f("language"),
            *ADDRESS,
            _f("telecom", pa.list_(TELECOM)),
        ],
    ),
    "encounters": _with_common(
        [_f("encounter_id"), _f("patient_id")],
        [
            _f("status"),
            _f("class_code"),
            _f("type", CODE),
            _f("start", TS),
            _f("end", TS),
            _f("reason", CODE),
            _f("provider"),
            _f("location"),
            _f("discharge_disposition"),
            _f("part_of"),  # encounter_id of the encounter this one belongs to (a transfer, an ICU stay)
        ],
    ),
    "events": _with_common(
        [_f("event_id"), _f("patient_id"), _f("encounter_id")],
        [
            _f("kind"),  # condition|observation|medication|procedure|immunization|allergy|device|careplan|goal
            _f("category"),
            _f("code", CODE),
            _f("codes", pa.list_(CODE)),
            _f("status"),
            _f("start", TS),
            _f("end", TS),
            _f("value_num", pa.float64()),
            _f("value_text"),
            _f("value_code", CODE),
            _f("unit"),
            _f("ref_low", pa.float64()),
            _f("ref_high", pa.float64()),
            _f("interpretation"),
            _f("parent_id"),
        ],
    ),
    "documents": _with_common(
        [_f("document_id"), _f("patient_id"), _f("encounter_id")],
        [
            _f("kind"),  # note|report|radiology_report|discharge_summary|...
            _f("title"),
            _f("code", CODE),
            _f("date", TS),
            _f("author"),
            _f("status"),
            _f("content_type"),
            _f("text"),
            _f("sections", pa.list_(SECTION)),
        ],
    ),
    "imaging_studies": _with_common(
        [_f("study_uid"), _f("patient_id")],
        [
            _f("source_patient_id"),
            _f("accession"),
            _f("date", TS),
            _f("description"),
            _f("modalities", pa.list_(pa.string())),
            _f("referring_physician"),
            _f("institution"),
        ],
    ),
    "imaging_series": _with_common(
        [_f("series_uid"), _f("study_uid"), _f("patient_id")],
        [_f("modality"), _f("body_part"), _f("description"), _f("series_number", pa.int32())],
    ),
    "imaging_instances": _with_common(
        [_f("sop_instance_uid"), _f("series_uid"), _f("study_uid"), _f("patient_id")],
        [
            _f("sop_class_uid"),
            _f("instance_number", pa.int32()),
            _f("rows", pa.int32()),
            _f("columns", pa.int32()),
            _f("frames", pa.int32()),
            _f("photometric"),
            _f("transfer_syntax"),
            _f("pixel_status"),  # decoded|no_pixels|undecodable: <reason>
            _f("thumbnail", pa.binary()),  # PNG, longest side <= 128 px
            _f("file_uri"),
        ],
    ),
    "variants": _with_common(
        [_f("patient_id"), _f("sample_id")],
        [
            _f("chrom"),
            _f("pos", pa.int64()),
            _f("ref"),
            _f("alt"),
            _f("variant_id"),
            _f("qual", pa.float64()),
            _f("filter"),
            _f("genotype"),
            _f("zygosity"),
            _f("depth", pa.int32()),
            _f("gene"),
            _f("consequence"),
            _f("impact"),
            _f("hgvs_c"),
            _f("hgvs_p"),
        ],
    ),
    "literature": _with_common(
        [_f("doc_id")],
        [
            _f("collection"),
            _f("title"),
            _f("text"),
            _f("year", pa.int32()),
            _f("mesh", pa.list_(pa.string())),
            _f("extra"),  # JSON object with source-specific fields
        ],
    ),
    "claims": _with_common(
        [_f("claim_id"), _f("patient_id"), _f("encounter_id")],
        [
            _f("kind"),
            _f("status"),
            _f("start", TS),
            _f("end", TS),
            _f("total", pa.float64()),
            _f("currency"),
            _f("provider"),
        ],
    ),
    "directory": _with_common(
        [_f("entity_id")],
        [
            _f("kind"),  # practitioner|organization|location|practitioner_role
            _f("name"),
            _f("code", CODE),
            _f("identifiers", pa.list_(IDENTIFIER)),
            *ADDRESS,
            _f("telecom", pa.list_(TELECOM)),
        ],
    ),
    "fhir_other": _with_common(
        [_f("resource_type"), _f("resource_id"), _f("patient_id")],
        [_f("resource_json")],
    ),
}

SYSTEM_SCHEMAS: dict[str, pa.Schema] = {
    "provenance": pa.schema(
        [
            _f("provenance_id"),
            _f("source_uri"),
            _f("source_sha256"),
            _f("locator"),
            _f("record_sha256"),
            _f("reader"),
            _f("reader_version"),
            _f("pipeline_version"),
            _f("run_id"),
            _f("ingested_at", TS),
        ]
    ),
    "quarantine": pa.schema(
        [
            _f("row_id"),
            _f("run_id"),
            _f("source_uri"),
            _f("source_sha256"),
            _f("locator"),
            _f("reader"),
            _f("reason"),
            _f("raw"),
            _f("quarantined_at", TS),
        ]
    ),
    "sources": pa.schema(
        [
            _f("source_uri"),
            _f("sha256"),
            _f("size_bytes", pa.int64()),
            _f("format"),
            _f("run_id"),
            _f("records_in", pa.int64()),
            _f("rows_written", pa.int64()),
            _f("quarantined", pa.int64()),
            _f("ingested_at", TS),
        ]
    ),
    "commits": pa.schema(
        [
            _f("version", pa.int64()),
            _f("run_id"),
            _f("message"),
            _f("committed_at", TS),
            _f("table_versions"),  # JSON: {table: lance version}
            _f("summary"),  # JSON ingest summary
        ]
    ),
}

#: tables copied, de-identified, into the research zone as ``research_<table>``
RESEARCH_TABLES = ("patients", "encounters", "events", "documents", "imaging_studies",
                   "imaging_series", "imaging_instances", "variants", "claims", "literature")
RESEARCH_SCHEMAS: dict[str, pa.Schema] = {f"research_{t}": SCHEMAS[t] for t in RESEARCH_TABLES}

SYSTEM_SCHEMAS["consent"] = pa.schema(
    [_f("patient_id"), _f("research_allowed", pa.bool_()), _f("updated_at", TS), _f("note")]
)
#: research pseudonyms of the patients who withdrew (no clinical id): research reads of *any*
#: version leave them out, so time travel cannot bring a withdrawn patient back
SYSTEM_SCHEMAS["research_withdrawn"] = pa.schema([_f("patient_id"), _f("withdrawn_at", TS)])

#: embedding width of the default embedder; an index built with another model rewrites the
#: chunk tables with its own width
VECTOR_DIM = 384


def chunk_schema(dim: int = VECTOR_DIM) -> pa.Schema:
    """Chunks of documents and literature: the unit of search (``retrieval/``)."""
    return pa.schema([
        _f("row_id"),
        _f("source_table"),  # documents | literature
        _f("source_row_id"),
        _f("source_provenance_id"),  # the source row's version: a new one means re-chunk
        _f("document_id"),
        _f("patient_id"),
        _f("encounter_id"),
        _f("date", TS),
        _f("kind"),
        _f("title"),
        _f("section"),
        _f("chunk_index", pa.int32()),
        _f("start", pa.int32()),  # offsets into the source text
        _f("end", pa.int32()),
        _f("text"),  # exactly source_text[start:end]
        _f("search_text"),  # header (title, section) + text: what BM25 and the embedder see
        _f("content_sha"),  # sha256 of embedder + search_text: the embedding cache key
        _f("embedder"),
        _f("vector", pa.list_(pa.float32(), dim)),
        _f("provenance_id"),
    ])


#: chunk tables of the two zones (clinical: documents + literature; research: their copies)
CHUNK_TABLES = {"chunks": ("documents", "literature"),
                "research_chunks": ("research_documents", "research_literature")}

#: medical vocabularies (reference data: the same in both zones); see knowledge/vocab.py
VOCAB_SCHEMAS: dict[str, pa.Schema] = {
    "concepts": pa.schema([
        _f("row_id"), _f("concept_id"), _f("system"), _f("code"), _f("label"),
        _f("synonyms", pa.list_(pa.string())), _f("parents", pa.list_(pa.string())), _f("definition"),
        _f("source_uri"), _f("loaded_at", TS),
    ]),
    "concept_links": pa.schema([
        _f("row_id"), _f("from_id"), _f("to_id"), _f("relation"), _f("source_uri"), _f("loaded_at", TS),
    ]),
}

#: concept mentions found in documents (knowledge/linking.py), one table per zone; a row with a
#: null concept_id records that a document version was annotated and held no mention
MENTION_SCHEMA = pa.schema([
    _f("row_id"), _f("source_table"), _f("source_row_id"), _f("source_provenance_id"), _f("patient_id"),
    _f("date", TS), _f("concept_id"), _f("label"), _f("start", pa.int32()), _f("end", pa.int32()), _f("text"),
    _f("negated", pa.bool_()), _f("historical", pa.bool_()), _f("family", pa.bool_()),
    _f("hypothetical", pa.bool_()), _f("linker"),
])
MENTION_TABLES = {"mentions": "documents", "research_mentions": "research_documents"}

ALL_SCHEMAS: dict[str, pa.Schema] = {**SCHEMAS, **SYSTEM_SCHEMAS, **RESEARCH_SCHEMAS,
                                     **{t: chunk_schema() for t in CHUNK_TABLES}, **VOCAB_SCHEMAS,
                                     **dict.fromkeys(MENTION_TABLES, MENTION_SCHEMA)}

#: row-id prefix of each data table; ``trace`` finds a row's table from it.
PREFIX: dict[str, str] = {
    "patients": "pat",
    "encounters": "enc",
    "events": "evt",
    "documents": "doc",
    "imaging_studies": "stu",
    "imaging_series": "ser",
    "imaging_instances": "ins",
    "variants": "var",
    "literature": "lit",
    "claims": "clm",
    "directory": "dir",
    "fhir_other": "oth",
    "quarantine": "qua",
    "chunks": "chk",
    "concepts": "cpt",
    "concept_links": "cln",
    "mentions": "men",
}
TABLE_OF_PREFIX = {v: k for k, v in PREFIX.items()}

def stable_id(*parts: object) -> str:
    """A 32-hex-digit id derived from ``parts`` (same parts, same id, on every machine)."""
    key = "\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def row_id(table: str, *key: object) -> str:
    """The row id of a data row: its table prefix and a stable hash of its natural key."""
    return f"{PREFIX[table]}_{stable_id(table, *key)}"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept: system (FHIR URI or vocabulary id), code and display."""

    system: str | None
    code: str | None
    display: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"system": self.system, "code": self.code, "display": self.display}
