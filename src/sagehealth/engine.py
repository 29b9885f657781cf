"""Where the heavy stages run: in this process (the default) or on Ray.

``--engine ray`` (or ``$SAGEHEALTH_ENGINE=ray``) runs the embedding stage on Ray Data: a local
Ray started for the run, bound to 127.0.0.1 (node IP pinned, no dashboard, no usage stats),
or an existing cluster at ``--ray-address`` / ``$SAGEHEALTH_RAY_ADDRESS`` (its workers must
see the store's path, e.g. a shared file system or object storage). Ray is an extra:
``pip install 'sagehealth[ray]'``. Both engines write the same rows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sagehealth.errors import EngineError

ENGINE_ENV = "SAGEHEALTH_ENGINE"
ADDRESS_ENV = "SAGEHEALTH_RAY_ADDRESS"
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """An engine choice: ``name`` (local | ray), the Ray cluster ``address`` (None: a local
    Ray for the run), ``workers`` (embedding actors; None: one per CPU of the cluster, or per
    GPU when ``gpus_per_worker``), and CPUs/GPUs each worker holds."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    @property
    def distributed(self) -> bool:
        return self.name == "ray"


def choose(name: str | None = None, *, address: str | None = None, workers: int | None = None,
           gpus_per_worker: float | None = None) -> Engine:
    """The engine asked for (else ``$SAGEHEALTH_ENGINE``, else local), checked."""
    name = (name or os.environ.get(ENGINE_ENV) or "local").strip().lower()
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise EngineError(f"workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise EngineError(f"gpus per worker must be 0 or more, got {gpus_per_worker}")
    if name == "local":
        return Engine()
    return Engine("ray", address or os.environ.get(ADDRESS_ENV) or None, workers, 1.0, gpus_per_worker or 0.0)


def import_ray() -> Any:
    """The ``ray`` module, or a clear error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
        import lance_ray  # noqa: F401
    except ImportError as exc:
        raise EngineError("the ray engine needs Ray Data and lance-ray: pip install 'sagehealth[ray]'") from exc
    return ray


@contextmanager
def ray_session(engine: Engine) -> Iterator[Any]:
    """Ray for one run: the running one when this process already joined a cluster; else the
    cluster at ``engine.address``; else a local Ray on 127.0.0.1, shut down afterwards."""
    if not engine.address:
        _loopback()
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # notices, not problems: token authentication is on; Ray Data's progress bars are off
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": True}
    try:
        with warnings.catch_warnings():
            # Ray starts its processes with fork+exec: Lance's fork warnings do not apply
            warnings.filterwarnings("ignore", message=".*(lance is not fork-safe|lancedb fork support).*")
            if engine.address:
                ray.init(address=engine.address, **kwargs)
            else:
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = engine.address or "a local Ray on 127.0.0.1"
        raise EngineError(f"cannot start or reach {where}: {exc}") from exc
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        yield ray
    finally:
        ray.shutdown()


def _loopback() -> None:
    """Make a local Ray take 127.0.0.1 as its node address (Ray turns an explicit
    ``_node_ip_address="127.0.0.1"`` into the machine's routable address): the switch Ray
    itself uses on macOS and Windows, read when Ray is imported and inherited by its workers."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray already imported in this process: its switch was read then
        constants.ENABLE_RAY_CLUSTER = False


def worker_count(ray: Any, engine: Engine) -> int:
    """Embedding actors for a run: ``engine.workers``, else as many as the cluster's CPUs (or
    GPUs, when each worker takes GPUs) allow."""
    if engine.workers:
        return engine.workers
    res = ray.cluster_resources()
    if engine.gpus_per_worker:
        return max(1, int(res.get("GPU", 0) // engine.gpus_per_worker))
    return max(1, int(res.get("CPU", 1) // engine.cpus_per_worker))
