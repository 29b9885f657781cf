"""The ONNX Runtime embedder and the int8 all-MiniLM-L6-v2 that ships inside the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sagehealth.errors import EmbedderError
from sagehealth.retrieval.embedders import OnnxEmbedder, bundled_model, get_embedder

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def emb():
    return get_embedder("minilm-int8")


def test_close_to_the_original_fp32_model(emb):
    """Each vector is within cosine 0.97 of sentence-transformers' fp32 vector of the same text
    (computed once with torch: tests/data/minilm_reference.json)."""
    ours = emb.embed_documents(REFERENCE["texts"])
    ref = np.asarray(REFERENCE["vectors"], np.float32)
    assert ours.shape == ref.shape == (3, 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() > 0.97, cos
    # and it keeps the original's ranking: each text is nearest to its own reference vector
    assert (np.argmax(ours @ ref.T, axis=1) == np.arange(3)).all()


def test_a_batch_with_padding_gives_the_vectors_of_single_texts(emb):
    texts = ["No acute fracture.", "Mild degenerative change of the medial compartment with small effusion. " * 3,
             "", "Ünïcode façade — 5 mg/kg q8h"]
    batch = emb.embed_documents(texts)
    alone = np.vstack([emb.embed_documents([t]) for t in texts])
    assert np.allclose(batch, alone, atol=1e-4)
    assert np.allclose(emb.embed_queries(texts[:2]), batch[:2], atol=1e-4)  # no prefixes for this model
    assert emb.embed_documents([]).shape == (0, 384)


def test_long_texts_are_cut_at_the_token_limit(emb):
    base = "The left ventricle is normal in size and function. "
    assert np.allclose(emb.embed_documents([base * 60]), emb.embed_documents([base * 80]), atol=1e-4)


def test_a_broken_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedderError, match="cannot load the ONNX embedder"):
        OnnxEmbedder(str(tmp_path))
    (tmp_path / "embedder.json").write_text(json.dumps({"name": "x", "dim": 384}))
    (tmp_path / "tokenizer.json").write_bytes(Path(bundled_model("minilm-l6-int8"), "tokenizer.json").read_bytes())
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(EmbedderError, match="cannot load the ONNX embedder"):
        OnnxEmbedder(str(tmp_path))
    with pytest.raises(EmbedderError, match="unknown embedder"):
        get_embedder("onnx-nope")
