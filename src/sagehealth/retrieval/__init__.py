"""Representation and retrieval: chunks of documents and literature, embeddings, BM25 and
vector indexes in the lakehouse, hybrid search and its evaluation."""

from sagehealth.retrieval.chunking import Chunk, chunk_document, chunk_literature
from sagehealth.retrieval.embedders import Embedder, get_embedder
from sagehealth.retrieval.search import MODES, Hit

__all__ = ["MODES", "Chunk", "Embedder", "Hit", "chunk_document", "chunk_literature", "get_embedder"]
