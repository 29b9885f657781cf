"""The embedding stage on Ray Data: the pending chunks of one table version are read by
lance-ray's reader in Ray tasks, embedded by a pool of actors (each loads the embedder once;
CPU or GPU workers), and streamed back to the caller, which writes and commits them in rounds
exactly as the single-process stage does (:meth:`sagehealth.Ecosystem._embed`). An actor that
dies is restarted and its batch retried by Ray Data; a batch is only stored once, matched on
row id and text hash, so a retry neither loses nor doubles a vector.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from sagehealth.retrieval.index import PENDING_COLUMNS, embed_rows

#: rows per Ray Data batch: larger than the local stage's, as each batch is a task round trip
RAY_BATCH = int(os.environ.get("SAGEHEALTH_RAY_BATCH", "256"))
#: Ray Data block size while embedding (chunk texts are ~1-2 KB: a few hundred rows a block)
BLOCK_BYTES = 512 << 10


class EmbedActor:
    """A Ray Data actor: the embedder made once by ``factory`` (run inside the worker, with
    ``threads`` threads), then one vector column per batch."""

    def __init__(self, factory: Callable[[], Any], threads: int, known: dict[str, np.ndarray] | None = None) -> None:
        os.environ["SAGEHEALTH_EMBED_THREADS"] = str(max(1, threads))
        self.embedder = factory()
        self.seen: dict[str, np.ndarray] = dict(known or {})

    def __call__(self, batch: pa.Table) -> pa.Table:
        part = batch.select(PENDING_COLUMNS)
        vectors = np.asarray(embed_rows(part, self.embedder, self.seen), np.float32)  # (rows, dim), also for 0 rows
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])
        return part.append_column("vector", column)


def embed_stream(uri: str, version: int, factory: Callable[[], Any], *, workers: int,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, batch: int = RAY_BATCH,
                 known: dict[str, np.ndarray] | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(pending rows, their vectors) of the Lance table at ``uri``, ``version``, embedded by
    ``workers`` Ray actors; batches arrive as they are done (in no particular order). ``known``
    (text hash -> vector, e.g. of the clinical chunks a research chunk copies) is given to
    every actor, which embeds only the other texts. Needs a running Ray
    (:func:`sagehealth.engine.ray_session`)."""
    import lance_ray
    from ray.data import DataContext

    # a read task packs a whole fragment into one block unless blocks are small: then every
    # actor gets work, and vectors come back while the rest are still being embedded
    ctx = DataContext.get_current()
    block_bytes, ctx.target_max_block_size = ctx.target_max_block_size, BLOCK_BYTES
    try:
        # reading is light next to embedding: read tasks hold no CPU, so a pool of actors that
        # takes every CPU of the cluster cannot starve them (Ray Data would wait for ever)
        with warnings.catch_warnings():  # lance-ray 0.5 passes ray_remote_args, deprecated by Ray 2.5x
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
            data = lance_ray.read_lance(uri, columns=PENDING_COLUMNS, filter="vector IS NULL",
                                        dataset_options={"version": int(version)}, ray_remote_args={"num_cpus": 0},
                                        scanner_options={"batch_size": batch})
        remote: dict[str, Any] = {"num_cpus": cpus_per_worker}
        if gpus_per_worker:
            remote["num_gpus"] = gpus_per_worker
        out = data.map_batches(EmbedActor, fn_constructor_kwargs={"factory": factory, "known": known or None,
                                                                  "threads": max(1, int(cpus_per_worker))},
                               batch_size=batch, batch_format="pyarrow", compute=_pool(workers), **remote)
        yield from _batches(out)
    finally:
        ctx.target_max_block_size = block_bytes


def _batches(out: Any) -> Iterator[tuple[pa.Table, np.ndarray]]:
    for rb in out.iter_batches(batch_format="pyarrow", batch_size=None):
        if not rb.num_rows:
            continue
        vec = rb.column("vector").combine_chunks()
        dim = vec.type.list_size
        yield rb.select(PENDING_COLUMNS), vec.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def _pool(workers: int) -> Any:
    """A fixed pool of ``workers`` actors."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=workers)
