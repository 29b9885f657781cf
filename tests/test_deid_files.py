"""De-identified copies of DICOM (PS3.15 basic profile) and VCF files for the research zone."""

from __future__ import annotations

import gzip
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary, ExplicitVRLittleEndian

from sagehealth import Ecosystem
from sagehealth.privacy.files import deidentify_files
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


# -- nested identifiers in DICOM (issue 14, item 5) ----------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
#: the test files pip's pydicom bundles (get_testdata_file would download the others)
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
IDENTIFYING = ("InstitutionName", "InstitutionalDepartmentName", "DeviceSerialNumber", "IrradiationEventUID")
DUMMY_DATES = {"", "00010101", "00010101010101.000000+0000", "000000.00"}
DUMMY_TEXT = {"", "ANONYMIZED"}
FREE_TEXT_VRS = ("LO", "LT", "SH", "ST", "UC", "UR", "UT")
STRING_VRS = FREE_TEXT_VRS + ("AE", "CS", "PN", "UI")


def _well_known(uid: str) -> bool:
    """A SOP class, transfer syntax or other UID of the standard: not about anybody."""
    return uid in UID_dictionary or uid.startswith("1.2.840.10008.")


def _elements(ds, path=""):
    """(path, element) for the file meta and every element of every item of every sequence."""
    meta = getattr(ds, "file_meta", None) if not path else None
    if meta is not None:
        yield from _elements(meta, "meta/")
    for el in ds:
        yield path, el
        if el.VR == "SQ":
            for i, item in enumerate(el.value or []):
                yield from _elements(item, f"{path}{el.keyword or el.tag}[{i}]/")


def _values(el) -> list[str]:
    v = el.value
    if el.VR == "SQ" or v is None or isinstance(v, (bytes, bytearray)):
        return []
    return [str(x) for x in v if x is not None] if isinstance(v, (list, MultiValue)) else [str(v)]


def _identifiers(path):
    """Original UIDs (not the standard's), person names and identifying attribute values."""
    uids, names, other = set(), set(), set()
    for _, el in _elements(pydicom.dcmread(path, force=True)):
        vals = [v for v in _values(el) if v.strip(" ^")]
        if el.VR == "UI":
            uids |= {v for v in vals if not _well_known(v)}
        elif el.VR == "PN":
            names |= set(vals)
        if el.keyword in IDENTIFYING:
            other |= set(vals)
    return uids, names - DUMMY_TEXT, other - DUMMY_TEXT


def _leaks(pairs: dict, deid) -> list[str]:
    """Walk every element of every output (``pairs``: source -> output); the elements still
    holding an identifier of their source, or a UID not keyed like the top-level ones, named by
    file and path only (never by value, so a failing test prints none)."""
    found = []
    identifiers = {src: _identifiers(src) for src in pairs}
    keyed = {deid.uid(u) for uids, _, _ in identifiers.values() for u in uids}
    for src, out in pairs.items():
        uids, names, other = identifiers[src]
        originals = uids | names | other
        long_ones = [o for o in uids | names if len(o) >= 6]  # e.g. a name inside a description
        for path, el in _elements(pydicom.dcmread(out, force=True)):
            vals = _values(el)
            bad = el.tag.is_private
            if el.VR in STRING_VRS:
                bad |= any(v in originals for v in vals)
            if el.VR == "UI":  # the same keyed mapping as the top-level UIDs, or a standard UID
                bad |= not all(not v or _well_known(v) or v in keyed for v in vals)
            elif el.VR == "PN":
                top = path == "" and el.keyword == "PatientName"
                bad |= not all(v.startswith("psn_") if top else v in DUMMY_TEXT for v in vals)
            elif el.VR in ("DA", "DT", "TM") and path not in ("", "meta/"):
                bad |= not set(vals) <= DUMMY_DATES
            elif el.VR in FREE_TEXT_VRS:
                bad |= any(o in v for o in long_ones for v in vals)
            if el.keyword in IDENTIFYING and el.VR != "UI":
                bad |= not set(vals) <= DUMMY_TEXT
            if bad:
                found.append(f"{src.name}: {path}{el.keyword or el.tag}")
    return found


def _export(paths, out, deid) -> dict:
    """source -> output of the files that were exported (one call per file: names repeat)."""
    done = {p: deidentify_files([p], out, deid) for p in paths}
    return {p: out / d[0]["output"] for p, d in done.items() if d and "output" in d[0]}


def _rt_set(tmp_path):
    """pydicom's RT plan, structure set and dose, rewired so the plan references the structure
    set and the dose references the plan (as a real RT export does)."""
    plan = pydicom.dcmread(PYDICOM_FILES / "rtplan.dcm")
    struct = pydicom.dcmread(PYDICOM_FILES / "rtstruct.dcm", force=True)
    dose = pydicom.dcmread(PYDICOM_FILES / "rtdose.dcm")
    plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = struct.SOPInstanceUID
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    folder = tmp_path / "rt"
    folder.mkdir()
    for name, ds in (("rtplan.dcm", plan), ("rtstruct.dcm", struct), ("rtdose.dcm", dose)):
        ds.save_as(folder / name)
    return folder


def test_dicom_nested_identifiers_are_replaced_in_every_element_of_real_files(samples, tmp_path):
    rt = _rt_set(tmp_path)
    bundled = [PYDICOM_FILES / n for n in ("test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm", "UN_sequence.dcm",
                                           "nested_priv_SQ.dcm", "priv_SQ.dcm", "MR_small.dcm")]
    fixtures = sorted(f for f in (FIXTURES / "dicom").iterdir() if f.is_file() and not f.name.startswith("LICENSE"))
    sources = sorted(rt.iterdir()) + bundled + sorted((samples / "dicom").glob("*.dcm")) + fixtures
    deid = RowDeidentifier(KEY)
    out = _export(sources, tmp_path / "out", deid)
    assert {"rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "test-SR.dcm", "reportsi.dcm", "CT_small.dcm",
            "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"} <= {s.name for s in out}
    assert _leaks(out, deid) == []
    plan, struct, dose = (pydicom.dcmread(out[rt / n], force=True) for n in ("rtplan.dcm", "rtstruct.dcm",
                                                                             "rtdose.dcm"))
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == struct.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    # references to files outside the export get the same keyed UID as they would as files
    src_struct = pydicom.dcmread(rt / "rtstruct.dcm", force=True)
    rtref = src_struct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    new = struct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert new.ReferencedSOPInstanceUID == deid.uid(rtref.ReferencedSOPInstanceUID)
    assert (new.RTReferencedSeriesSequence[0].SeriesInstanceUID
            == deid.uid(rtref.RTReferencedSeriesSequence[0].SeriesInstanceUID))
    assert struct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == deid.uid(
        src_struct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)
    # the plan's nested institution and device serial number (beam sequence) are gone
    beams = plan.BeamSequence
    assert beams and all(str(b.get("InstitutionName") or "") in DUMMY_TEXT for b in beams)


ROOT = "1.3.6.1.4.1.99999.7777"  # made-up UIDs
RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _synthetic(sop_class, study, series, sop, **attrs):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.ImplementationClassUID = f"{ROOT}.99"
    ds.file_meta.SourceApplicationEntityTitle = "SYNTH_MODALITY"
    ds.SOPClassUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = sop_class, study, series, sop
    ds.PatientID, ds.PatientName, ds.StudyDate = "SYN-0001", "Synthpatient^Alice", "20230405"
    ds.InstitutionName, ds.DeviceSerialNumber = "Synthetic General Hospital", "SN-4471-XY"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _item(**attrs):
    item = Dataset()
    for k, v in attrs.items():
        setattr(item, k, v)
    return item


def _reference(study, series, sop, sop_class=RAW_DATA_STORAGE, **deeper):
    """A hierarchical SOP instance reference (study > series > instance)."""
    instance = _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop)
    return _item(StudyInstanceUID=study, ReferencedSeriesSequence=Sequence(
        [_item(SeriesInstanceUID=series, ReferencedSOPSequence=Sequence([instance]), **deeper)]))


def test_dicom_synthetic_nested_references_stay_consistent_across_files(tmp_path):
    study = f"{ROOT}.1"
    raw = _synthetic(RAW_DATA_STORAGE, study, f"{ROOT}.1.1", f"{ROOT}.1.1.1",
                     FrameOfReferenceUID=f"{ROOT}.5", IrradiationEventUID=f"{ROOT}.6")
    nested = dict(InstitutionName="Synthetic Outpatient Clinic", InstitutionalDepartmentName="Synthetic Radiology",
                  DeviceSerialNumber="SN-9902-NESTED", IrradiationEventUID=[f"{ROOT}.7", f"{ROOT}.8"],
                  OperatorsName="Synthoperator^Bob", SeriesDate="20230406", SeriesTime="101112",
                  AcquisitionDateTime="20230406101112", ReferencedFrameOfReferenceUID=f"{ROOT}.5")
    report = _synthetic(BASIC_TEXT_SR, study, f"{ROOT}.1.2", f"{ROOT}.1.2.1",
                        ReferencedRawDataSequence=Sequence([
                            _reference(study, f"{ROOT}.1.1", f"{ROOT}.1.1.1", **nested)]),
                        PredecessorDocumentsSequence=Sequence([_reference(
                            f"{ROOT}.2", f"{ROOT}.2.1", f"{ROOT}.2.1.1", BASIC_TEXT_SR,
                            InstitutionName="Synthetic Predecessor Site",
                            VerifyingObserverName="Synthverifier^Carol")]))
    # InstitutionName & co. two levels deep: ReferencedRawDataSequence > ReferencedSeriesSequence
    report.ReferencedRawDataSequence[0].add_new(0x00090010, "LO", "SYNTH CREATOR")  # a nested private block
    report.ReferencedRawDataSequence[0].add_new(0x00091010, "UI", f"{ROOT}.1.1.1")
    folder = tmp_path / "in"
    folder.mkdir()
    raw.save_as(folder / "raw.dcm", enforce_file_format=True)
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    deid = RowDeidentifier(KEY)
    out = _export(sorted(folder.iterdir()), tmp_path / "out", deid)
    assert len(out) == 2 and _leaks(out, deid) == []
    new_raw, new_report = pydicom.dcmread(out[folder / "raw.dcm"]), pydicom.dcmread(out[folder / "report.dcm"])
    ref = new_report.ReferencedRawDataSequence[0]
    series = ref.ReferencedSeriesSequence[0]
    assert ref.StudyInstanceUID == new_raw.StudyInstanceUID == new_report.StudyInstanceUID
    assert series.SeriesInstanceUID == new_raw.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new_raw.SOPInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == RAW_DATA_STORAGE
    assert series.ReferencedFrameOfReferenceUID == new_raw.FrameOfReferenceUID
    assert new_raw.file_meta.MediaStorageSOPInstanceUID == new_raw.SOPInstanceUID
    pred = new_report.PredecessorDocumentsSequence[0]
    assert pred.StudyInstanceUID == deid.uid(f"{ROOT}.2")
    instance = pred.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert instance.ReferencedSOPInstanceUID == deid.uid(f"{ROOT}.2.1.1")
    assert list(series.IrradiationEventUID) == [deid.uid(f"{ROOT}.7"), deid.uid(f"{ROOT}.8")]
    assert "SourceApplicationEntityTitle" not in new_report.file_meta


def test_dicom_shared_imaging_has_no_identifiers_left_at_any_depth(shared, tmp_path):
    folder = shared / "imaging"
    if not folder.is_dir():
        pytest.skip("no shared imaging data")
    sources = sorted(f for f in folder.rglob("*.dcm") if f.is_file())
    deid = RowDeidentifier(KEY)
    out = _export(sources, tmp_path / "out", deid)
    assert len(out) >= len(sources) // 2  # most of them are readable instances
    assert _leaks(out, deid) == []


# -- identifying VCF header lines (issue 14, item 6) ----------------------------------------

VCF_ALLOWED = ("##fileformat=", "##INFO=", "##FORMAT=", "##FILTER=", "##ALT=", "##contig=", "##reference=", "#CHROM")


def test_vcf_header_keeps_only_allow_listed_lines_and_no_sample_ids_or_paths(tmp_path):
    import cyvcf2

    src = FIXTURES / "vcf_export" / "identifying_header.vcf"  # made-up sample ids, user and paths
    deid = RowDeidentifier(KEY)
    out = _export([src], tmp_path / "out", deid)[src]
    data = out.read_bytes()
    secrets = ("SMP7731", "SMP7732", "jdoe", "home", "SMP7731_run", "refdata_v3", "annot_dbs", "Testperson",
               "Example Teaching Hospital", "20240312", "HaplotypeCaller")
    assert [s for s in secrets if s.encode() in data] == []
    lines = data.decode().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert all(line.startswith(VCF_ALLOWED) for line in header)
    assert "##reference=human_g1k_v37.fasta" in header
    assert [h for h in header if h.startswith("##contig")] == [
        "##contig=<ID=1,length=249250621,assembly=b37>",
        '##contig=<ID=X,length=155270560,assembly=b37,md5=2b3a55ff7f58eb308420c8a9b11cac50,species="Homo sapiens">']
    assert len([h for h in header if h.startswith(("##INFO", "##FORMAT", "##FILTER", "##ALT"))]) == 10
    assert '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency, as in gnomad.vcf.gz">' in header
    keyed = [deid.key_of("sample_id", s) for s in ("SMP7731", "SMP7732")]
    before, after = cyvcf2.VCF(str(src)), cyvcf2.VCF(str(out))
    assert after.samples == keyed
    old, new = list(before), list(after)
    assert len(old) == len(new) == 3
    for a, b in zip(old, new):
        assert (a.CHROM, a.POS, a.REF, a.ALT, a.QUAL, a.FILTER) == (b.CHROM, b.POS, b.REF, b.ALT, b.QUAL, b.FILTER)
        assert a.genotypes == b.genotypes and (a.format("AD") == b.format("AD")).all()
        assert [a.INFO.get(k) for k in ("DP", "AF", "END")] == [b.INFO.get(k) for k in ("DP", "AF", "END")]
    assert [r.ID for r in new] == ["rs367896724", f"{keyed[0]}_var1", None]
    assert [r.INFO.get("SRC") for r in new] == [None, keyed[0], f"caller:{keyed[1]}"]
