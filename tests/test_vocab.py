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
