"""De-identified copies of DICOM (PS3.15 basic profile) and VCF files for the research zone."""

from __future__ import annotations

import gzip

import pydicom
import pytest

from sagehealth import Ecosystem
from sagehealth.privacy.structured import RowDeidentifier
from helpers import STEWARD

KEY = "files-test-key-0123456789abcdef"


@pytest.fixture
def store(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    for sub in ("fhir", "dicom", "vcf"):
        eco.ingest([samples / sub], options={"deid_key": KEY})
    return eco


def test_dicom_copy_follows_the_basic_profile_and_matches_the_research_tables(store, samples, tmp_path):
    out = tmp_path / "out"
    done = store.export_deidentified_files([samples / "dicom" / "CT_small.dcm"], out, key=KEY)
    assert len(done) == 1 and done[0]["kind"] == "dicom" and "error" not in done[0]
    src = pydicom.dcmread(samples / "dicom" / "CT_small.dcm")
    ds = pydicom.dcmread(out / done[0]["output"])
    deid = RowDeidentifier(KEY)
    # CT_small's PatientID 1CT1 is the identifier of the bundled patient sage-demo-001
    assert ds.PatientID == deid.pseudonym("sage-demo-001") == str(ds.PatientName)
    assert ds.PatientIdentityRemoved == "YES" and "PS3.15" in ds.DeidentificationMethod
    for tag in ("InstitutionName", "ReferringPhysicianName", "AccessionNumber", "PatientBirthDate"):
        assert str(ds.get(tag) or "") != str(src.get(tag) or "x"), tag
    assert str(src.PatientName) not in str(ds)
    research = store.lake.sql("SELECT study_uid, patient_id FROM research_imaging_studies").to_pylist()
    assert {"study_uid": ds.StudyInstanceUID, "patient_id": ds.PatientID} in research
    assert ds.pixel_array.shape == src.pixel_array.shape  # pixels kept


def test_vcf_copy_has_keyed_sample_ids_matching_the_research_tables(store, samples, tmp_path):
    out = tmp_path / "out"
    (done,) = store.export_deidentified_files([samples / "vcf" / "test-hemi.vcf"], out, key=KEY)
    text = (out / done["output"]).read_text()
    src = (samples / "vcf" / "test-hemi.vcf").read_text()
    original = [c for line in src.splitlines() if line.startswith("#CHROM") for c in line.split("\t")[9:]]
    assert original and not [s for s in original if s in text]
    research_ids = {r["sample_id"] for r in store.lake.read("research_variants").to_pylist()}
    header = next(line for line in text.splitlines() if line.startswith("#CHROM")).split("\t")[9:]
    assert research_ids <= set(header)
    assert sum(1 for l in text.splitlines() if not l.startswith("#")) == sum(
        1 for l in src.splitlines() if l and not l.startswith("#"))


def test_gzipped_vcf_and_unreadable_dicom(store, tmp_path, samples):
    vcf = tmp_path / "in.vcf.gz"
    vcf.write_bytes(gzip.compress((samples / "vcf" / "test-hemi.vcf").read_bytes()))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    done = store.export_deidentified_files([vcf, bad], tmp_path / "out", key=KEY)
    kinds = {d["kind"]: d for d in done}
    assert kinds["vcf"]["output"].endswith(".vcf.gz") and "error" in kinds["dicom"]
