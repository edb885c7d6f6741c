"""Where blocks run: in this process, or on a Dask cluster (``conf/cluster/``).

``cluster.kind``:

- ``none``: in-process, one block after the other; Dask is not imported.
- ``local``: a ``distributed.LocalCluster`` on this machine (``n_workers``, ``threads_per_worker``,
  ``memory_limit``); with GPUs one worker per GPU by default, each pinned to its own device.
- ``slurm``, ``pbs``, ``lsf``: ``dask-jobqueue`` clusters; ``cluster.job`` holds the arguments of
  ``SLURMCluster`` / ``PBSCluster`` / ``LSFCluster`` (queue, cores, memory, walltime, job
  directives), ``cluster.jobs`` the number of jobs, or ``cluster.adaptive`` ``{minimum_jobs,
  maximum_jobs}``.
- ``address``: an existing scheduler, ``cluster.address=tcp://host:8786``.

An engine maps a function over block indices and yields ``(index, result)`` as blocks finish,
``result`` being the exception for a block that failed (after Dask's retries): one bad block
never stops the others.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.interrupts import raise_if_stop_requested

log = logging.getLogger(__name__)
JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}
CLUSTER_KINDS = ("none", "local", "address", *JOBQUEUE_CLASSES)


class InProcess:
    """Blocks one after the other in this process."""

    workers = 1

    def map(
        self, fn: Callable[[Any, int], Any], job: Any, indices: Iterable[int]
    ) -> Iterator[tuple[int, Any]]:
        for index in indices:
            raise_if_stop_requested()
            try:
                yield index, fn(job, index)
            except Exception as err:  # reported per block by the caller; the others go on
                yield index, err

    def close(self) -> None:
        pass


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    try:
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(cfg, resolve=True))
    except ValueError:
        return dict(cfg)


def jobqueue_cluster(cfg: Any):
    """The ``dask-jobqueue`` cluster of ``cfg`` (``kind`` slurm, pbs or lsf), not yet scaled: no
    job is submitted, ``cluster.job_script()`` shows what would be."""
    import dask_jobqueue

    kind = str(cfg.kind)
    if kind not in JOBQUEUE_CLASSES:
        raise ValueError(
            f"not a dask-jobqueue cluster kind: {kind!r} ({', '.join(JOBQUEUE_CLASSES)})"
        )
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])(**_plain(cfg.get("job")))


def check_submittable(cluster: Any, kind: str) -> None:
    """Raise :class:`UsageError` where the scheduler's submit command is missing or, on SLURM,
    where ``sbatch --test-only`` refuses the job script (more cores or memory than a node has, an
    unknown partition). dask-jobqueue drops a refused submission silently: the client would
    wait ``wait_for_workers`` seconds for a worker that never comes."""
    command = cluster.job_cls.submit_command
    if shutil.which(command) is None:
        raise UsageError(f"cluster={kind}: {command!r} not found on this machine's PATH")
    if kind != "slurm":
        return
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="unet-seg-job-") as script:
        script.write(cluster.job_script())
        script.flush()
        tried = subprocess.run([command, "--test-only", script.name], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
    if tried.returncode != 0:
        reason = tried.stderr.strip().splitlines()[-1] if tried.stderr.strip() else "no reason"
        raise UsageError(
            f"cluster=slurm: sbatch refuses the worker job ({reason}); set "
            "cluster.job.cores, memory, queue or walltime to what SLURM allows"
        )


def make_cluster(cfg: Any):
    """The Dask cluster object of ``cfg`` (``None`` for ``address``): a ``LocalCluster`` or a
    ``dask-jobqueue`` cluster, scaled as configured."""
    kind = str(cfg.kind)
    if kind == "local":
        from distributed import LocalCluster

        n_workers = cfg.get("n_workers")
        if n_workers is None:
            import torch

            n_workers = torch.cuda.device_count() or 1
        dashboard = cfg.get("dashboard_address")
        # null means off: Dask would otherwise take its default :8787. The scheduler's HTTP
        # server (health checks) then listens on a free port, with no dashboard pages.
        off = {} if dashboard else {"scheduler_kwargs": {"dashboard": False}}
        return LocalCluster(
            n_workers=int(n_workers),
            threads_per_worker=int(cfg.get("threads_per_worker") or 1),
            memory_limit=cfg.get("memory_limit") or "auto",
            dashboard_address=dashboard or ":0",
            processes=True,
            **off,
        )
    if kind in JOBQUEUE_CLASSES:
        cluster = jobqueue_cluster(cfg)
        try:
            check_submittable(cluster, kind)
        except UsageError:
            cluster.close()
            raise
        adaptive = _plain(cfg.get("adaptive"))
        if adaptive:
            cluster.adapt(**adaptive)
        else:
            cluster.scale(jobs=int(cfg.get("jobs") or 1))
        return cluster
    if kind == "address":
        return None
    raise ValueError(f"cluster.kind must be one of {CLUSTER_KINDS}, got {kind!r}")


def _identity(value: Any) -> Any:
    return value


class DaskEngine:
    """Blocks as Dask tasks: retried on lost workers (``retries``), gathered as they finish."""

    def __init__(self, cfg: Any) -> None:
        from distributed import Client

        self.cluster = make_cluster(cfg)
        if self.cluster is None:
            if not cfg.get("address"):
                raise ValueError("cluster=address needs cluster.address=tcp://host:port")
            self.client = Client(str(cfg.address))
        else:
            self.client = Client(self.cluster)
        self.retries = int(cfg.get("retries") or 0)
        if str(cfg.kind) != "local" or cfg.get("dashboard_address"):
            log.info("Dask dashboard: %s", self.client.dashboard_link)
        if str(cfg.kind) != "local":
            self.client.wait_for_workers(1, timeout=cfg.get("wait_for_workers"))
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(
        self, fn: Callable[[Any, int], Any], job: Any, indices: Iterable[int]
    ) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        indices = list(indices)
        if not indices:
            return
        # Sent once, not with every task, as a task of its own: the scheduler can compute it
        # again on another worker when its worker dies. Scattered data cannot be recomputed: a
        # kill -9 of the worker holding its only copy cancelled every block of the file.
        shared = self.client.submit(_identity, job, pure=False)
        futures = self.client.map(
            fn, [shared] * len(indices), indices, retries=self.retries, pure=False
        )
        index_of = {f.key: i for f, i in zip(futures, indices, strict=True)}
        for future in as_completed(futures):
            raise_if_stop_requested()
            error = future.exception()
            yield index_of[future.key], error if error is not None else future.result()
            future.release()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def check_cluster(cfg: Any) -> None:
    """Raise :class:`UsageError` for a ``cluster`` config that cannot start, before any input is
    read (a TIFF-only batch runs in-process and would otherwise never notice)."""
    if cfg is None:
        return
    kind = str(cfg.get("kind", "none"))
    if kind not in CLUSTER_KINDS:
        raise UsageError(f"cluster.kind must be one of {', '.join(CLUSTER_KINDS)}, got {kind!r}")
    if kind == "address" and not cfg.get("address"):  # '???' reads as None
        raise UsageError("cluster=address needs cluster.address=tcp://host:port")


def make_engine(cfg: Any) -> InProcess | DaskEngine:
    """The engine of a ``cluster`` config (``None`` or ``kind: none``: in-process)."""
    if cfg is None or str(cfg.get("kind", "none")) == "none":
        return InProcess()
    return DaskEngine(cfg)
