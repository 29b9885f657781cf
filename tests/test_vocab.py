"""Vocabularies: OBO, ICD-10-CM XML, Disease Ontology and MeSH files into concept tables;
hierarchy and crosswalk queries; bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import STEWARD, shared_path
from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied, VocabularyError
from sagehealth.governance import Principal

FIX = Path(__file__).parent / "fixtures" / "vocab"
RESEARCHER = Principal("re", "researcher", "research")


@pytest.fixture
def store(tmp_path):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.load_vocabulary([FIX / "mini.obo", FIX / "mini_icd10cm.xml"])
    return eco


def test_concepts_synonyms_hierarchy_and_crosswalks(store):
    r = store.as_principal(RESEARCHER)
    t2 = r.concept("DOID:9352", ancestors=True)
    assert t2["label"] == "type 2 diabetes mellitus" and t2["synonyms"] == ["T2DM", "adult-onset diabetes"]
    assert [(a["concept_id"], a["depth"]) for a in t2["ancestors"]] == [("DOID:9351", 1), ("DOID:4", 2)]
    assert {x["concept_id"] for x in t2["links"]} == {"ICD10CM:E11"}
    e11 = r.concept("ICD10CM:E11", descendants=True, ancestors=True)
    assert e11["synonyms"] == ["diabetes NOS"]
    assert [(d["concept_id"], d["depth"]) for d in e11["descendants"]] == \
        [("ICD10CM:E11.2", 1), ("ICD10CM:E11.9", 1), ("ICD10CM:E11.21", 2)]
    assert [a["concept_id"] for a in e11["ancestors"]] == ["ICD10CM:E08-E13", "ICD10CM:chapter-4"]
    assert {x["concept_id"] for x in e11["links"]} == {"DOID:9352"}  # the crosswalk, seen from ICD
    with pytest.raises(VocabularyError, match="no concept 'DOID:1'"):
        r.concept("DOID:1")  # obsolete terms are not loaded


def test_loading_again_merges_and_adds_no_duplicates(store, tmp_path):
    before = store.lake.count("concepts"), store.lake.count("concept_links")
    more = tmp_path / "more.obo"
    more.write_text("format-version: 1.2\n\n[Term]\nid: DOID:9352\nname: type 2 diabetes mellitus\n"
                    "synonym: \"NIDDM\" EXACT []\n")
    result = store.load_vocabulary([FIX / "mini.obo", more])
    assert (store.lake.count("concepts"), store.lake.count("concept_links")) == before
    assert result["links_added"] == 0
    assert "NIDDM" in store.as_principal(RESEARCHER).concept("DOID:9352")["synonyms"]


def test_bad_vocabulary_files_are_clear_errors(tmp_path):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    junk = tmp_path / "terms.csv"
    junk.write_text("a,b\n1,2\n")
    with pytest.raises(VocabularyError, match="not a vocabulary file"):
        eco.load_vocabulary([junk])
    broken = tmp_path / "broken.xml"
    broken.write_text("<ICD10CM.tabular><chapter><name>1</name>")
    with pytest.raises(VocabularyError, match="cannot read it as icd10cm"):
        eco.load_vocabulary([broken])
    assert eco.lake.count("concepts") == 0  # nothing half-written
    with pytest.raises(AccessDenied):
        eco.as_principal(RESEARCHER).load_vocabulary([FIX / "mini.obo"])


def test_shared_vocabularies_load_with_crosswalks(tmp_path):
    onto = shared_path("ontologies")
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    result = eco.load_vocabulary([onto])
    assert result["concepts"] > 100_000
    r = eco.as_principal(RESEARCHER)
    t2 = r.concept("DOID:9352", ancestors=True)
    assert {"ICD10CM:E11", "MESH:D003924"} <= {x["concept_id"] for x in t2["links"]}
    assert "DOID:9351" in [a["concept_id"] for a in t2["ancestors"]]
    seizure = r.concept("HP:0001250", descendants=True)
    assert seizure["label"] == "Seizure" and len(seizure["descendants"]) > 50
    mesh = r.concept("MESH:D003920", descendants=True)
    assert mesh["label"] == "Diabetes Mellitus" and any(d["concept_id"] == "MESH:D003924" for d in mesh["descendants"])


# -- LOINC and SNOMED CT (user-licensed files; the fixtures are a handful of rows in their formats)

def test_snomed_rf2_release_folder_loads_preferred_terms_and_active_hierarchy(tmp_path):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    result = eco.load_vocabulary([FIX / "snomed_rf2"])  # Snapshot and Full beside each other
    assert not any("Full" in f for f in result["files"])  # history files are skipped in a folder
    r = eco.as_principal(RESEARCHER)
    viral = r.concept("SNOMEDCT:195662009", ancestors=True)
    assert viral["label"] == "Acute viral pharyngitis" and viral["synonyms"] == ["Viral sore throat"]
    # the inactive |is a| straight to Disease is not a parent; the active chain is
    assert viral["parents"] == ["SNOMEDCT:363746003"]
    assert [a["concept_id"] for a in viral["ancestors"]] == [
        "SNOMEDCT:363746003", "SNOMEDCT:405737000", "SNOMEDCT:64572001", "SNOMEDCT:404684003", "SNOMEDCT:138875005"]
    anemia = r.concept("SNOMEDCT:271737000")
    assert anemia["label"] == "Anemia" and anemia["synonyms"] == ["Anaemia"]  # US English preferred term
    assert r.concept("SNOMEDCT:405737000")["synonyms"] == []  # an inactive description is no synonym
    with pytest.raises(VocabularyError, match="no concept 'SNOMEDCT:999000001'"):
        r.concept("SNOMEDCT:999000001")  # inactive concept


def test_snomed_without_language_refset_uses_the_fsn_without_its_tag(tmp_path):
    rel = tmp_path / "rf2"
    rel.mkdir()
    src = FIX / "snomed_rf2" / "Snapshot" / "Terminology" / "sct2_Description_Snapshot-en_INT_20250101.txt"
    (rel / src.name).write_text(src.read_text())
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.load_vocabulary([rel / src.name])
    c = eco.as_principal(RESEARCHER).concept("SNOMEDCT:271737000")
    assert c["label"] == "Anemia" and c["synonyms"] == ["Anaemia"]
    # without the concept file beside it, nothing says the retired concept is inactive
    assert eco.as_principal(RESEARCHER).concept("SNOMEDCT:999000001")["label"] == "Retired concept"


def test_snomed_full_file_alone_is_refused_and_a_broken_row_says_where(tmp_path):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    with pytest.raises(VocabularyError, match="Full or Delta"):
        eco.load_vocabulary([FIX / "snomed_rf2" / "Full" / "Terminology" / "sct2_Description_Full-en_INT_20250101.txt"])
    bad = tmp_path / "sct2_Relationship_Snapshot_INT_20250101.txt"
    bad.write_text("id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\trelationshipGroup\ttypeId\n"
                   "1\t2002\t1\t9\t195662009\n")
    with pytest.raises(VocabularyError, match=r"sct2_Relationship_Snapshot_INT_20250101.txt:2: 5 columns"):
        eco.load_vocabulary([bad])


def test_loinc_table_and_multiaxial_hierarchy(tmp_path):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    result = eco.load_vocabulary([FIX / "loinc"])
    assert result["concepts"] == 6  # 2 codes (1 deprecated left out) + 4 parts
    r = eco.as_principal(RESEARCHER)
    a1c = r.concept("LOINC:4548-4", ancestors=True)
    assert a1c["label"] == "Hemoglobin A1c/Hemoglobin.total in Blood"  # Loinc.csv's name wins
    assert "Hgb A1c MFr Bld" in a1c["synonyms"] and a1c["definition"].startswith("The percentage")
    assert [a["concept_id"] for a in a1c["ancestors"]] == ["LOINC:LP16413-4", "LOINC:LP29693-6", "LOINC:LP432695-7"]
    assert {d["concept_id"] for d in r.concept("LOINC:LP29693-6", descendants=True)["descendants"]} == {
        "LOINC:LP14635-4", "LOINC:LP16413-4", "LOINC:2339-0", "LOINC:4548-4"}
    with pytest.raises(VocabularyError):
        r.concept("LOINC:1-8")


def test_coded_rows_meet_the_snomed_hierarchy(tmp_path):
    """Synthea conditions are SNOMED-coded: with the release loaded, 'patients with pharyngitis'
    finds those coded with its descendant 'acute viral pharyngitis'."""
    from sagehealth.demo import sample_root

    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.ingest([sample_root() / "fhir" / "bulk"], options={"index": False})
    eco.load_vocabulary([FIX / "snomed_rf2"])
    everyone = frozenset(eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist())
    doc = eco.as_principal(Principal("dr", "clinician", "treatment", patients=everyone))
    coded = {r["patient_id"] for r in eco.lake.sql(
        "SELECT DISTINCT patient_id FROM events WHERE code.code = '195662009'").to_pylist()}
    assert coded
    found = doc.patients_with("SNOMEDCT:405737000")
    assert {r["patient_id"] for r in found} == coded and all(r["coded_rows"] > 0 for r in found)
    assert doc.patients_with("SNOMEDCT:405737000", descendants=False) == []


def test_a_loinc_release_folder_keeps_english_names_and_leaves_variants_out(tmp_path):
    """In a release, AccessoryFiles/ (hierarchy, linguistic variants) sorts before LoincTable/:
    the English long common name must still win, and a German variant is no LOINC table."""
    import shutil

    rel = tmp_path / "Loinc_2.80"
    (rel / "LoincTable").mkdir(parents=True)
    (rel / "AccessoryFiles" / "MultiAxialHierarchy").mkdir(parents=True)
    (rel / "AccessoryFiles" / "LinguisticVariants").mkdir(parents=True)
    shutil.copy(FIX / "loinc" / "Loinc.csv", rel / "LoincTable" / "Loinc.csv")
    shutil.copy(FIX / "loinc" / "MultiAxialHierarchy.csv", rel / "AccessoryFiles" / "MultiAxialHierarchy")
    (rel / "AccessoryFiles" / "LinguisticVariants" / "deDE15LinguisticVariant.csv").write_text(
        '"LOINC_NUM","COMPONENT","PROPERTY","TIME_ASPCT","SYSTEM","SCALE_TYP","METHOD_TYP","CLASS",'
        '"SHORTNAME","LONG_COMMON_NAME","LinguisticVariantDisplayName"\n'
        '"2339-0","Glukose","MCnc","Pkt","Bld","Qn","","CHEM","","Glukose [Masse/Volumen] in Blut",""\n'
        '"1-8","Aciclovir","Susc","Pkt","Isolat","OrdQn","","ABXBACT","","Aciclovir",""\n')
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.load_vocabulary([rel])
    r = eco.as_principal(RESEARCHER)
    assert r.concept("LOINC:2339-0")["label"] == "Glucose [Mass/volume] in Blood"
    assert r.concept("LOINC:LP14635-4")["label"] == "Glucose"  # parts are named by the hierarchy
    with pytest.raises(VocabularyError):
        r.concept("LOINC:1-8")  # deprecated in the table; the variant file does not bring it back


def test_snomed_siblings_come_from_the_same_release_and_broken_files_are_errors(tmp_path):
    import shutil

    snap = tmp_path / "rel" / "Snapshot"
    shutil.copytree(FIX / "snomed_rf2" / "Snapshot", snap)
    # an extension beside the international release: its own concept file says what is active
    term = snap / "Terminology"
    (term / "sct2_Concept_Snapshot_US1000124_20250301.txt").write_text(
        "id\teffectiveTime\tactive\tmoduleId\tdefinitionStatusId\n"
        "991000124101\t20250301\t1\t731000124108\t900000000000074008\n")
    (term / "sct2_Description_Snapshot-en_US1000124_20250301.txt").write_text(
        "id\teffectiveTime\tactive\tmoduleId\tconceptId\tlanguageCode\ttypeId\tterm\tcaseSignificanceId\n"
        "9910001241\t20250301\t1\t731000124108\t991000124101\ten\t900000000000003001\t"
        "Extension finding (finding)\t900000000000448009\n")
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    result = eco.load_vocabulary([tmp_path / "rel"])
    r = eco.as_principal(RESEARCHER)
    assert r.concept("SNOMEDCT:991000124101")["label"] == "Extension finding"
    assert r.concept("SNOMEDCT:195662009")["label"] == "Acute viral pharyngitis"
    assert sum(v["concepts"] for v in result["files"].values()) >= 10
    # a recognised file that does not read is an error, also inside a folder
    (term / "sct2_Relationship_Snapshot_INT_20250101.txt").write_text(
        "id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\trelationshipGroup\ttypeId\n1\t2\n")
    with pytest.raises(VocabularyError, match=r"sct2_Relationship_Snapshot_INT_20250101.txt:2"):
        eco.load_vocabulary([tmp_path / "rel"])


def test_crosswalk_prefixes_with_an_edition_date_name_the_code_system():
    """Disease Ontology writes SNOMED CT xrefs with the edition ("SNOMEDCT_US_2025_09_01:…");
    every edition is the same code system (issue 16)."""
    from sagehealth.knowledge.vocab import normalise_id

    assert normalise_id("SNOMEDCT_US_2025_09_01:44054006") == "SNOMEDCT:44054006"
    assert normalise_id("SNOMEDCT_US_2023_03_01:44054006") == "SNOMEDCT:44054006"
    assert normalise_id("SNOMEDCT_US:44054006") == normalise_id("snomedct:44054006") == "SNOMEDCT:44054006"
    assert normalise_id("MSH:D003920") == "MESH:D003920" and normalise_id("no-prefix") is None
