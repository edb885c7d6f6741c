"""Running a block plan on an engine: the blocks not yet recorded, under a progress bar, with
failures reported by block and the outputs kept for a rerun unless a rerun cannot do better.

Also the block options of ``conf/predict.yaml`` and the per-block instance options. The stages
around it (input, outputs, instances, commit) are the per-file driver's,
:mod:`unet_seg.prediction.driver`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from unet_seg.blockwise.task import BlockJob, RunnerSpec, run_block
from unet_seg.config import whole
from unet_seg.errors import OutputWriteError
from unet_seg.inference.runner import RunnerOptions
from unet_seg.instances.stitch import StitchOptions, stitch_options_of
from unet_seg.models.ensemble import checkpoint_spec

log = logging.getLogger(__name__)


class BlockFailures(RuntimeError):
    """Some blocks failed; ``failed`` lists ``(index, position, error)``."""

    def __init__(self, path: Path, failed: list[tuple[int, tuple, str]], counts: dict) -> None:
        self.failed, self.counts = failed, counts
        shown = "; ".join(f"block {i} at {p}: {e}" for i, p, e in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(
            f"{path}: {len(failed)} of {counts['total']} blocks failed: {shown}{more}; the other "
            "blocks are recorded, rerun to compute only the missing ones"
        )


def give_up_if_hopeless(path: Path, errors: list[BaseException], outputs: dict) -> None:
    """Raise the first error, after removing the partial stores, when a rerun cannot do better:
    an output that cannot be written (a full disk: the stores would keep holding it while the
    rest of the batch needs it) or an input found damaged (every error is a ``ValueError``
    naming it). Other failures (a worker lost, out of memory) keep the stores for a rerun."""
    written = [e for e in errors if isinstance(e, OutputWriteError)]
    damaged = [e for e in errors if isinstance(e, ValueError) and str(e).startswith(f"{path}: ")]
    if not written and len(damaged) < len(errors):
        return
    for output in outputs.values():
        output.abort()
    raise (written or damaged)[0]


def tiling_chunks(chunks: tuple[int, ...], layout) -> tuple[int, int, int]:
    """The file's spatial chunks in the tiling's ``(Z, Y, X)`` order (slice axis first)."""
    if layout.spatial_dims == 2:
        return (1, *chunks)
    order = [layout.slice_axis, *(a for a in range(3) if a != layout.slice_axis)]
    return tuple(int(chunks[a]) for a in order)


def stitch_options(instances: Any, volume: Any, layout: Any = None) -> StitchOptions:
    """The per-block instance options of the prediction's ``instances`` options; the spacing
    in the tiling's ``(Z, Y, X)`` order (the slice axis first) when ``layout`` is given."""
    spacing = tuple(volume.spacing)
    if layout is not None:
        spacing = spacing[-layout.spatial_dims :]
        if layout.spatial_dims == 3:  # blocks label their labels in the tiling's order
            rest = [s for a, s in enumerate(spacing) if a != layout.slice_axis]
            spacing = (spacing[layout.slice_axis], *rest)
    return stitch_options_of(instances, spacing)


@dataclass(frozen=True)
class BlockOptions:
    """What block-wise prediction adds to the per-file options (``conf/predict.yaml``)."""

    runner: RunnerSpec
    input_level: int = 0
    block_size: tuple[int, int, int] | None = None
    mask: dict | None = None  # {path, threshold, level}

    @classmethod
    def from_config(cls, cfg: Any, running: RunnerOptions | None = None) -> BlockOptions:
        """The block options of ``cfg``; workers run the model as ``running`` says (default:
        read from ``cfg``)."""
        running = running or RunnerOptions.from_config(cfg)
        spec = RunnerSpec(checkpoint_spec(cfg.checkpoint), **asdict(running))
        size = cfg.get("block_size")
        mask = cfg.get("mask")
        return cls(
            spec, whole("input_level", cfg.get("input_level") or 0),
            None if size is None else tuple(whole("block_size", b) for b in size),
            None if mask is None else {k: mask.get(k) for k in ("path", "threshold", "level")},
        )  # fmt: skip


def run_blocks(
    path: Path, job: BlockJob, engine: Any, done: set[int], progress: bool | None
) -> dict:
    """Run the blocks of ``job`` not in ``done`` on ``engine`` under a tqdm bar; returns the
    counts ``{total, computed, skipped, failed}``.

    Raises:
        BlockFailures: after all other blocks finished, when some block failed.
    """
    blocks = job.blocks
    todo = [i for i in range(len(blocks)) if i not in done]
    counts = {"total": len(blocks), "computed": 0, "skipped": len(done), "failed": 0}
    failed: list[tuple[int, tuple, str]] = []
    errors: list[BaseException] = []
    bar = tqdm(
        total=len(blocks), initial=len(done), desc=f"blocks {Path(path).name}", unit="block",
        disable=None if progress is None else not progress,
    )  # fmt: skip
    with bar:
        for index, result in engine.map(run_block, job, todo):
            if isinstance(result, BaseException):
                position = blocks.block(index).position
                failed.append((index, position, f"{type(result).__name__}: {result}"))
                errors.append(result)
                log.error("%s: block %d at %s failed: %s", path, index, position, result)
                counts["failed"] += 1
            else:
                counts["computed" if result["status"] == "computed" else "skipped"] += 1
            bar.update()
    if failed:
        give_up_if_hopeless(path, errors, job.outputs)
        raise BlockFailures(path, failed, counts)
    return counts
