"""De-identified copies of source files for the research zone: DICOM and VCF.

- DICOM: the DICOM PS3.15 basic application level confidentiality profile (the action table of
  the standard, as implemented by the package ``dicom-anonymizer``, BSD-3), then SAGE-Health's
  keyed values: PatientID and PatientName become the patient's research pseudonym (the one in
  the research tables), Study/Series/SOP Instance UIDs become the same keyed ``2.25.`` UIDs as
  in ``research_imaging_*``, and PatientIdentityRemoved / DeidentificationMethod say what was
  done. Private tags are removed; pixel data is kept (burned-in text is not detected yet).
- VCF: sample ids in the ``#CHROM`` header become the keyed ids of ``research_variants``;
  ``##SAMPLE``, ``##commandline`` and other header lines that can name people or paths are
  dropped. Streamed line by line (gzip in, gzip out).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO, Any

from sagehealth.privacy.structured import RowDeidentifier

#: VCF header lines that may carry names, paths or sample metadata
VCF_DROP_PREFIXES = ("##SAMPLE", "##commandline", "##GATKCommandLine", "##source_", "##individual",
                     "##PEDIGREE", "##reference=file", "##DRAGEN", "##bcftools_")

UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def deidentify_dicom(src: Path, dst: Path, deid: RowDeidentifier, *,
                     find_patient: Any = None) -> dict[str, str]:
    """Write a de-identified copy of one DICOM file; returns the keyed ids it was given."""
    import pydicom
    from dicomanonymizer import anonymize_dataset
    from dicomanonymizer.simpledicomanonymizer import initialize_actions_2024b

    ds = pydicom.dcmread(src)
    source_pid = str(ds.get("PatientID") or "")
    patient = (find_patient(source_pid) if find_patient else None) or source_pid
    uids = {tag: str(ds.get(tag)) for tag in UID_TAGS if ds.get(tag)}
    if "SOPInstanceUID" not in uids:
        raise ValueError(f"{src.name}: not a DICOM instance (no SOP Instance UID)")
    anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=initialize_actions_2024b)
    psn = deid.pseudonym(patient) if patient else "psn_unknown"
    ds.PatientID = psn
    ds.PatientName = psn
    for tag, value in uids.items():
        keyed = deid.uid(value)  # the same keyed UID as in the research tables
        setattr(ds, tag, keyed)
        if tag == "SOPInstanceUID" and getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = keyed
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 basic profile; SAGE-Health keyed ids"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return {"PatientID": psn, **{tag: str(ds.get(tag)) for tag in uids}}


def _open_in(path: Path) -> IO[str]:
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", errors="replace")
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def deidentify_vcf(src: Path, dst: Path, deid: RowDeidentifier) -> dict[str, str]:
    """Write a copy of a VCF with keyed sample ids; returns original -> keyed sample ids only
    to the caller (never written anywhere)."""
    mapping: dict[str, str] = {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if dst.name.endswith((".gz", ".bgz")) else open
    with _open_in(src) as fin, opener(dst, "wt", encoding="utf-8") as fout:
        for line in fin:
            if line.startswith("##"):
                if not line.startswith(VCF_DROP_PREFIXES):
                    fout.write(line)
                continue
            if line.startswith("#CHROM"):
                cols = line.rstrip("\r\n").split("\t")
                for i in range(9, len(cols)):
                    mapping[cols[i]] = deid.key_of("sample_id", cols[i])
                    cols[i] = mapping[cols[i]]
                fout.write("\t".join(cols) + "\n")
                continue
            fout.write(line)
    return mapping


def deidentify_files(paths: list[Path], out: Path, deid: RowDeidentifier,
                     find_patient: Any = None) -> list[dict[str, str]]:
    """De-identified copies of the DICOM and VCF files among ``paths`` (folders walked) in
    ``out``, named by a keyed hash of their source path; one summary line per file."""
    from sagehealth.data.sources import dicom as dicom_src
    from sagehealth.data.sources import vcf as vcf_src

    done: list[dict[str, str]] = []
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))]
    for f in files:
        name = deid.key_of("file", str(f.resolve()))
        if vcf_src.detect(f):
            suffix = ".vcf.gz" if f.name.endswith((".gz", ".bgz")) else ".vcf"
            deidentify_vcf(f, out / f"{name}{suffix}", deid)
            done.append({"source": f.name, "kind": "vcf", "output": f"{name}{suffix}"})
        elif dicom_src.detect(f):
            try:
                deidentify_dicom(f, out / f"{name}.dcm", deid, find_patient=find_patient)
            except Exception as exc:  # noqa: BLE001 - a file that pydicom cannot read
                done.append({"source": f.name, "kind": "dicom", "error": f"{type(exc).__name__}: {exc}"})
                continue
            done.append({"source": f.name, "kind": "dicom", "output": f"{name}.dcm"})
    return done
