"""What the class labels in a predict output folder mean, from the run that wrote them.

A ``data.target=boundary`` model labels background 0, object interior 1 and object boundary 2;
scored against two-class truth, its objects are interior and boundary together. The folder's
``predict_summary.json`` names the checkpoint, whose data settings say which target it learnt,
so ``unet-seg-evaluate`` can score such labels without being told (``pred_label_map`` still
decides when given).
"""

from __future__ import annotations

import json
from pathlib import Path

from unet_seg.models.checkpoint import read_checkpoint

BOUNDARY_AS_OBJECTS = {0: 0, 1: 1, 2: 1}  # background, interior, boundary -> 2 classes


def boundary_label_map(pred_dir: str | Path) -> dict[int, int] | None:
    """:data:`BOUNDARY_AS_OBJECTS` when the predictions in ``pred_dir`` come from a
    ``data.target=boundary`` training checkpoint, else None (also when that cannot be told: no
    summary, an exported model, a checkpoint moved since)."""
    try:
        checkpoint = json.loads((Path(pred_dir) / "predict_summary.json").read_text())["checkpoint"]
        if not str(checkpoint).endswith(".ckpt"):
            return None
        data = read_checkpoint(checkpoint).get("datamodule_hyper_parameters") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(BOUNDARY_AS_OBJECTS) if data.get("target") == "boundary" else None
