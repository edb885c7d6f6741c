"""Which checkpoint and settings made the outputs in a folder, so that a rerun skips only its own.

Predict skips a file whose outputs are complete (an interrupted batch is simply run again). With
another checkpoint, or other settings that change the result (TTA, normalisation, instance
parameters, ...), those outputs are stale: ``predict_summary.json`` keeps, under
:data:`LEDGER_KEY`, every output path with the fingerprint of the run that wrote it (carried over
from run to run), and an output is skipped only when its fingerprint is this run's. Outputs
without an entry (another tool's, an older unet-seg's, or a run killed before its summary) are
predicted again.

Several predict processes may share an output folder (one job per input on a cluster): each
rereads the summary just before it writes its own, and a lost race only means a file is
predicted once more, never that a stale output is kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SUMMARY_NAME = "predict_summary.json"
LEDGER_KEY = "provenance"  # {output path: fingerprint} in the summary


def checkpoint_id(path: str | os.PathLike | tuple[str, ...]) -> str:
    """SHA-1 of the weights file (of a folder, e.g. an unzipped bioimage.io package: all its
    files with their names), so that another checkpoint never passes for this one. Read once
    per process while the files keep their sizes and times (predict's run and each zarr input's
    block key ask for the same one). An ensemble's paths (a tuple): the ids of its members, in
    order, in one SHA-1."""
    if isinstance(path, tuple):
        return hashlib.sha1(" ".join(map(checkpoint_id, path)).encode()).hexdigest()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _sha1_of(str(root), stamps)


@functools.lru_cache(maxsize=8)
def _sha1_of(root: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    """:func:`checkpoint_id` of the files ``stamps`` names (``(path, size, mtime)``) below
    ``root`` (a file: itself)."""
    digest = hashlib.sha1()
    for name, _, _ in stamps:
        file = Path(name)
        digest.update(str(file.relative_to(root)).encode() if file != Path(root) else b"")
        with open(file, "rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def run_fingerprint(checkpoint: str, settings: Mapping[str, Any]) -> str:
    """A short id of the weights (:func:`checkpoint_id`) and the ``settings`` that shape the
    outputs (plain values; their order does not matter)."""
    record = json.dumps({"checkpoint": checkpoint, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(record.encode()).hexdigest()[:16]


def runner_record(runner: Any, precision_reason: str) -> dict[str, Any]:
    """What ran the network, for the summary: ``runtime``, ``precision`` and why, torch's
    ``threads`` and whether the memory format was channels-last (a ``ModelRunner``'s)."""
    import torch

    return {"runtime": runner.runtime, "precision": runner.precision,
            "precision_reason": precision_reason, "threads": torch.get_num_threads(),
            "channels_last": runner.memory_format != torch.contiguous_format}  # fmt: skip


class OutputLedger:
    """The fingerprints of the outputs in ``out_dir`` (see the module's docstring)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / SUMMARY_NAME
        self.entries = self._load()
        self.written: dict[str, str] = {}  # this run's

    def _load(self) -> dict[str, str]:
        try:
            summary = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:  # unreadable: every output is predicted again
            log.warning("%s: unreadable (%s); existing outputs will be predicted again",
                        self.path, err)  # fmt: skip
            return {}
        entries = summary.get(LEDGER_KEY) if isinstance(summary, dict) else None
        return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}

    @staticmethod
    def _keys(targets: Mapping[str, Path]) -> list[str]:
        return [str(Path(t).resolve()) for t in targets.values()]

    def made_by(self, targets: Mapping[str, Path], fingerprint: str) -> bool:
        """Whether every one of ``targets`` (``{kind: path}``) was written by a run with
        ``fingerprint``."""
        return all(self.entries.get(key) == fingerprint for key in self._keys(targets))

    def record(self, targets: Mapping[str, Path], fingerprint: str) -> None:
        """Note ``targets`` as written by ``fingerprint`` in this run."""
        self.written.update(dict.fromkeys(self._keys(targets), fingerprint))

    def merged(self) -> dict[str, str]:
        """What the summary keeps: the entries on disk now (another process may have added
        some), with this run's over them."""
        return {**self._load(), **self.written}
