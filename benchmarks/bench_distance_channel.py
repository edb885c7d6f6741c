"""Does a distance-map channel earn its place? The boundary network of ``bench_instances.py``
against the same network with a fourth output channel trained on the distance to the object's
edge, each trained for the same wall-clock budget.

The issue on instances lists the channel as optional, "if it earns its place in the benchmark".
This script is that measurement; the channel is not part of the package.

- ``boundary``: ``data.target=boundary`` (background, interior, boundary), the ``seeded``
  watershed tuned on the tune split (as ``bench_instances.py``'s first line).
- ``boundary + distance``: the same network and target with one more output channel, trained with
  binary cross-entropy (on top of the class loss) against the Euclidean distance of each interior
  voxel to the nearest non-interior voxel, clipped at ``--clip`` voxels and divided by it (so
  touching objects, parted by their boundary class, get separate peaks). Two ways to cut objects
  from it: the ``seeded`` watershed on its three class channels (does the extra task help the
  classes?), and seeds from the distance channel: connected components of ``distance > d`` within
  the foreground, flooded over the foreground on ``1 - distance`` (foreground threshold, ``d`` and
  the minimum size tuned on the tune split by the same mean-AP search).

Figures on the test split as in ``bench_instances.py``: AP@0.5, mean AP 0.5:0.95, Rand error, VI
and the error kinds.

    flock /tmp/unet-bench.lock python benchmarks/bench_distance_channel.py --datasets isbi --tta
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import bench_instances as bench
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy import ndimage as ndi

from unet_seg.config import config_dir
from unet_seg.instances.methods import resolve
from unet_seg.instances.seeded import seeded_watershed
from unet_seg.training.module import SegmentationModule, crop_to
from unet_seg.training.train import build_module
from unet_seg.tuning.search import (
    SIZE_FRACTIONS,
    THRESHOLDS,
    TIE,
    median_object_size,
    plateau_centre,
    score,
    tune,
)

SEED_DISTANCES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)  # of the clip distance
INTERIOR = 1  # data.target=boundary's interior class


def distance_target(label: torch.Tensor, clip: float) -> torch.Tensor:
    """``(N, *spatial)`` boundary-target classes -> float32 ``(N, *spatial)`` in [0, 1]: each
    interior voxel's distance to the nearest non-interior voxel, clipped at ``clip``, / ``clip``."""
    labels = label.cpu().numpy()
    dist = [np.minimum(ndi.distance_transform_edt(lab == INTERIOR), clip) / clip for lab in labels]
    return torch.from_numpy(np.stack(dist).astype(np.float32))


class DistanceModule(SegmentationModule):
    """The segmentation module with one more output channel: the clipped, scaled distance."""

    clip = 16.0

    def _shared_step(self, batch):
        logits = self(batch["image"])
        classes, distance = logits[:, :-1], logits[:, -1]
        out_shape = logits.shape[2:]
        label = crop_to(batch["label"], out_shape)
        weight = batch.get("weight")
        weight = crop_to(weight, out_shape) if weight is not None else None
        # on the whole patch, then cropped: the distance sees edges beyond the output window
        target = crop_to(distance_target(batch["label"], self.clip), out_shape)
        loss = self.loss_fn(classes, label, weight)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(distance, target)
        return loss, classes, label


class Probabilities(torch.nn.Module):
    """Class probabilities (softmax) and the distance (sigmoid) of a ``DistanceModule``'s net,
    for the tiled inference with its own softmax off."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.spatial_dims = net, net.spatial_dims
        self.output_shape = net.output_shape

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.net(image)
        return torch.cat([logits[:, :-1].softmax(1), logits[:, -1:].sigmoid()], 1)


def distance_module(clip: float):
    """A ``make_module`` for ``bench_instances.train``: the config's module with one more
    output channel, trained on the distance clipped at ``clip`` voxels."""

    def make(cfg) -> DistanceModule:
        classes_only = build_module(cfg)
        net_config = {**classes_only.hparams.model, "num_classes": cfg.model.num_classes + 1}
        module = DistanceModule(
            model=net_config,
            loss=classes_only.hparams.loss,
            optimizer=classes_only.optimizer_factory,
            scheduler=classes_only.scheduler_factory,
        )
        module.clip = clip
        return module

    return make


def distance_seeded(
    probs: np.ndarray, foreground_threshold: float, seed_distance: float, min_size: int
) -> np.ndarray:
    """``(4, *spatial)`` (background, interior, boundary, distance) -> object ids ``(*spatial)``:
    predict's seeded watershed with the distance in place of the interior probability (seeds
    ``distance > seed_distance``, flooded on ``1 - distance``)."""
    return seeded_watershed(
        1.0 - probs[0], probs[-1], foreground_threshold, seed_distance, min_size
    )


def tune_distance_seeds(probs: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """The ``distance_seeded`` parameters with the best mean AP on the tune split."""
    median = median_object_size(truths)
    sizes = sorted({round(f * median) for f in SIZE_FRACTIONS})
    grid = [
        {"foreground_threshold": f, "seed_distance": d, "min_size": s}
        for f in THRESHOLDS
        for d in SEED_DISTANCES
        for s in sizes
    ]
    values = [score([distance_seeded(p, **g) for p in probs], truths, "ap") for g in grid]
    top = max(values)
    return plateau_centre([g for g, v in zip(grid, values, strict=True) if v >= top - TIE])


def run_dataset(data: bench.Dataset, workdir: Path, budget: float, tta: bool, clip: float):
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        plain = compose(
            "train",
            overrides=[*data.overrides, f"paths.runs_dir={workdir}", f"output_dir={workdir}"],
        )
    images, truths = bench.tune_split(plain)
    test_images = [image for image, _ in data.test]
    test_truths = [truth for _, truth in data.test]
    overrides = [*data.overrides, *data.boundary]
    results = {}

    def seeded_line(line: str, tune_probs: list[np.ndarray], test_probs: list[np.ndarray]):
        tuned = tune(tune_probs, truths, bench.BOUNDARY, methods=("seeded",), progress=False)
        results[line] = bench.figures(test_probs, test_truths, resolve(tuned))
        results[line]["params"] = tuned["methods"]["seeded"]

    print(f"  {data.name}: boundary, training {budget:g} s ...")
    model, _ = bench.train(overrides, workdir / data.name / "boundary", budget)
    seeded_line(
        "boundary + seeded",
        bench.probabilities(model, images, tta),
        bench.probabilities(model, test_images, tta),
    )

    print(f"  {data.name}: boundary + distance, training {budget:g} s ...")
    net, _ = bench.train(
        overrides, workdir / data.name / "distance", budget, make_module=distance_module(clip)
    )
    model = Probabilities(net).eval()
    tune_probs = bench.probabilities(model, images, tta, softmax=False)
    test_probs = bench.probabilities(model, test_images, tta, softmax=False)
    seeded_line("+ distance: seeded", [p[:-1] for p in tune_probs], [p[:-1] for p in test_probs])
    params = tune_distance_seeds(tune_probs, truths)
    line = "+ distance: distance seeds"
    results[line] = bench.figures(
        test_probs, test_truths, params, lambda probs, p: distance_seeded(probs, **p)
    )
    results[line]["params"] = params
    return results


def report(name: str, results: dict[str, dict]) -> None:
    bench.print_table(name, results)
    base = results["boundary + seeded"]
    best = max((k for k in results if k != "boundary + seeded"), key=lambda k: results[k]["ap50"])
    print(
        f"best distance line ({best}) / boundary + seeded: AP@0.5 "
        f"{bench.ratio(results[best]['ap50'], base['ap50'])}, mAP "
        f"{bench.ratio(results[best]['ap'], base['ap'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per network")
    parser.add_argument("--datasets", nargs="+", default=["isbi"], choices=list(bench.DATASETS))
    parser.add_argument("--tta", action="store_true", help="predict with dihedral TTA (8 views)")
    parser.add_argument("--clip", type=float, default=16.0, help="distance clip, voxels")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_distance_"))
    print(
        f"{args.budget:g} s training per network, {torch.get_num_threads()} threads, "
        f"TTA {'on' if args.tta else 'off'}, clip {args.clip:g}, {workdir}"
    )
    everything = {}
    for name in args.datasets:
        data = bench.DATASETS[name](workdir)
        if data is not None:
            everything[name] = run_dataset(data, workdir, args.budget, args.tta, args.clip)
            report(name, everything[name])
    if args.out:
        args.out.write_text(
            json.dumps(
                {"budget": args.budget, "tta": args.tta, "clip": args.clip, **everything}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
