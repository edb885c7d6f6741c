"""The block-wise instance pass: stitch the blocks' local ids, then relabel block by block.

Runs after every block has written its local instance ids (``outputs["instances_local"]``, a
hidden scratch store). The merge table needs one face at a time; the relabel pass is one more
set of block tasks on the same engine, recorded per block like the prediction, so an
interrupted run resumes there too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.inference.blocks import BlockPlan
from unet_seg.inference.blockwise import BlockJob, block_info, file_box
from unet_seg.inference.inputs import Layout
from unet_seg.inference.stitch import MergeTable, face_boxes, merge_table, neighbour_faces
from unet_seg.io.zarr_output import ZarrOutput


@dataclass
class RelabelJob:
    layout: Layout
    blocks: BlockPlan
    local: ZarrOutput
    final: ZarrOutput
    table: MergeTable


def relabel_block(job: RelabelJob, index: int) -> dict:
    """Write block ``index``'s global instance ids and record it."""
    start = time.perf_counter()
    block = job.blocks.block(index)
    box = file_box(job.layout, block.write_box)
    job.final.write(box, job.table.relabel(index, job.local.read(box)))
    info = block_info(block, "computed", time.perf_counter() - start)
    job.final.record(index, info)
    return info


def _faces(blocks: BlockPlan, layout: Layout, local: ZarrOutput) -> Iterator[tuple]:
    for a, b, axis in neighbour_faces(blocks):
        box_a, box_b = face_boxes(blocks, a, b, axis)
        yield a, b, local.read(file_box(layout, box_a)), local.read(file_box(layout, box_b))


def finish_instances(
    job: BlockJob, target: Path, engine: Any, min_size: int, store: Any, key: dict
) -> tuple[ZarrOutput, int, list]:
    """Stitch and relabel into the instance store at ``target`` (not yet committed).

    ``store(path, dtype, key)`` makes a label-image :class:`ZarrOutput` like the labels output.
    Returns the store, the number of objects and the failed relabel blocks ``(index,
    position, error)``.
    """
    local = job.outputs["instances_local"]
    summaries = {i: r["instances"] for i, r in local.records_of().items()}
    table = merge_table(job.blocks, summaries, _faces(job.blocks, job.layout, local), min_size)
    dtype = np.uint16 if table.count < 2**16 else np.uint32
    final = store(target, dtype, {**key, "objects": table.count, "min_size": min_size})
    done = final.open()
    relabel = RelabelJob(job.layout, job.blocks, local, final, table)
    failed = []
    todo = [i for i in range(len(job.blocks)) if i not in done]
    for index, result in engine.map(relabel_block, relabel, todo):
        if isinstance(result, BaseException):
            position = job.blocks.block(index).position
            failed.append((index, position, f"{type(result).__name__}: {result}"))
    return final, table.count, failed
