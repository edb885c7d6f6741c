"""What the class labels in a predict output folder mean, from the run that wrote them.

A ``data.target=boundary`` model labels background 0, object interior 1 and object boundary 2;
scored against two-class truth, its objects are interior and boundary together. The folder's
``predict_summary.json`` names the model, and a checkpoint's data settings or an export's
metadata say which target it learnt, so ``unet-seg-evaluate`` can score such labels without
being told (``pred_label_map`` still decides when given).
"""

from __future__ import annotations

import json
from pathlib import Path

from unet_seg.models.checkpoint import training_target

BOUNDARY_AS_OBJECTS = {0: 0, 1: 1, 2: 1}  # background, interior, boundary -> 2 classes


def boundary_label_map(pred_dir: str | Path) -> dict[int, int] | None:
    """:data:`BOUNDARY_AS_OBJECTS` when the predictions in ``pred_dir`` come from a model that
    learnt ``data.target=boundary`` (a training checkpoint, or an export of one), else None
    (also when that cannot be told: no summary, a model moved since, an export that predates
    the record)."""
    try:
        model = json.loads((Path(pred_dir) / "predict_summary.json").read_text())["checkpoint"]
        target = training_target(model)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(BOUNDARY_AS_OBJECTS) if target == "boundary" else None
