"""The dataset card (``README.md`` with YAML front matter) of a training-data export."""

from __future__ import annotations

import json
from typing import Any

TASKS = {"pretrain": ["text-generation"], "instruct": ["text-generation", "summarization"],
         "preference": ["text-generation", "reinforcement-learning"],
         "retrieval": ["sentence-similarity", "text-retrieval"]}
#: where the research zone's rows came from, by source system, and the terms they carry
LICENCES = {
    "fhir": "per source file (Synthea: Apache-2.0; SMART bulk sample: CC0)",
    "notes": "per source file (MTSamples: CC0; SAGE-Health synthetic reports: CC0; IU X-ray: Open-i terms, "
             "not for redistribution)",
    "dicom": "the DICOM source's terms",
    "mimic": "PhysioNet Credentialed Health Data License (MIMIC-IV): not for redistribution",
    "sagehealth-radiology": "reports signed in SAGE-Health: the institution's terms",
    "article": "the literature collection's terms (SciFact: CC BY 4.0 / ODC-By 1.0)",
}


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_card(result: Any, lake: Any, decontaminate: Any) -> str:
    """The card: YAML front matter the Hub reads, then the data card sections."""
    from sagehealth.training import curation as cur

    total = sum(result.splits.values())
    configs = "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in result.splits)
    removed = result.counts["removed"]
    lines = [
        "---",
        "license: other",
        "license_name: per-source (see Sources)",
        "language:",
        "- en",
        "task_categories:",
        *[f"- {t}" for t in TASKS[result.kind]],
        "tags:",
        "- medical",
        "- de-identified",
        "size_categories:",
        f"- {size_category(total)}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        configs,
        "---",
        "",
        f"# SAGE-Health `{result.kind}` dataset (store version {result.store_version})",
        "",
        f"{total:,} examples exported from the de-identified research zone of a SAGE-Health store by "
        "`sagehealth export dataset`. Load it with `datasets.load_dataset(\"parquet\", data_dir=...)`; "
        "`provenance.parquet` maps every example id to its research row and store version.",
        "",
        "## Splits",
        "",
        "| split | examples |",
        "|---|---:|",
        *[f"| {s} | {n:,} |" for s, n in result.splits.items()],
        "",
        "Splits are by patient (a hash of the research pseudonym), never by row.",
        "",
        "## Sources",
        "",
        "| source | examples | terms |",
        "|---|---:|---|",
        *[f"| {s} | {n:,} | {LICENCES.get(s, 'the source’s own terms')} |" for s, n in result.sources.items()],
        "",
        "## Curation",
        "",
        f"Examples looked at: {result.counts['seen']:,}; kept: {result.counts['kept']:,}.",
        "",
        "| step | removed |",
        "|---|---:|",
        *[f"| {k.replace('_', ' ')} | {v:,} |" for k, v in sorted(removed.items())],
        "",
        "- De-identification: the research zone's rows (keyed pseudonyms, per-patient date shifts, "
        "surrogates in free text); on export every text field again through the detector, to type tags "
        "([NAME], [DATE], ...), then re-scanned: any PHI the detector still finds, or any real identifier of a "
        "patient of the clinical zone (full name, identifier value, phone, e-mail), drops the example.",
        "- Consent: patients who withdrew research consent are not in the research zone and not here.",
        f"- Exact duplicates by normalized text; near duplicates by MinHash LSH (rensa; word {cur.SHINGLE}-gram "
        f"shingles, {cur.NUM_PERM} permutations in {cur.BANDS} bands, Jaccard ≥ {cur.JACCARD}, the first of each "
        f"cluster kept; {result.counts['near_duplicate_clusters']:,} clusters).",
        f"- Quality filters (rules as data): {json.dumps({k: v for k, v in cur.quality_rules().items() if not k.startswith('_')})}.",
        ("- Decontamination: examples sharing a "
         f"{cur.DECONTAMINATE_N}-word n-gram with {', '.join(str(p) for p in decontaminate)} removed."
         if decontaminate else "- Decontamination: none asked for (`--decontaminate FILE`)."),
        "",
        "## Known limitations",
        "",
        "- De-identification is automatic; its measured recall on notes of unseen patients is below 1 "
        "(see the SAGE-Health README): treat the data as limited-access.",
        "- Type tags replace names, dates and identifiers, so temporal and identity reasoning is not learnable.",
        "- Findings → impression pairs inherit the style and errors of the radiologists who signed them.",
        "",
    ]
    return "\n".join(lines)
