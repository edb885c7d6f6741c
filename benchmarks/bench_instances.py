"""Instance segmentation: boundary-aware targets + seeded watershed + tuned parameters against
class-map post-processing and MONAI's UNet, each network trained for the same wall-clock budget.

Data (train / tune / test):

- ``nuclei2d``: ``data_samples/2d`` (nuclei_00-07 train, 08-09 tune); test: 16 fresh 256 x 256
  images made by the sample generator with another seed (``unet_seg.data.samples``), true
  instances exact (462 nuclei);
- ``nuclei3d``: ``data_samples/3d`` (z 0-31 train, 32-47 tune); test: 4 fresh 48 x 96 x 96 volumes
  (83 nuclei). On a handful of test objects one merge swings AP@0.5 by 0.05;
- ``isbi``: ISBI 2012 sections 0-21 train, 22-24 tune, 25-29 test; instances are the connected
  components (face connectivity) of the cell interior.

Lines (every network trained ``--budget`` seconds on the CPU with the paper's border weights, no
validation during training; the post-processing parameters of every line tuned on the tune split
by mean AP 0.5:0.95):

- ours ``data.target=boundary`` (3 classes, 2-voxel boundary) + ``seeded`` watershed;
- ours class map (the experiment's classes) + ``cc`` and + ``distance`` watershed;
- MONAI ``UNet`` (the recipe of ``bench_isbi_accuracy.py``, 3D: channels 16-128, 3 strides) +
  ``cc`` and + ``distance``.

With ``--tta`` every line, MONAI's too, predicts the tune and test images with the dihedral TTA of
predict's ``tta=true`` (8 views in 2D, 8 flips in 3D).

Figures on the test split: AP@0.5 and mean AP@0.5:0.95 pooled over all test objects, Rand error
(foreground-restricted, adapted) and VI per image, averaged, and what the unmatched objects are
(merges, splits, missed, extra; :mod:`unet_seg.evaluation.error_kinds`), summed.

    flock /tmp/unet-bench.lock python benchmarks/bench_instances.py --budget 600
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import tifffile
import torch
from bench_isbi_accuracy import CroppedSameNet
from hydra import compose, initialize_config_dir
from scipy import ndimage as ndi

from unet_seg.config import config_dir
from unet_seg.data import samples
from unet_seg.data.boundary import objects_of
from unet_seg.evaluation.error_kinds import ErrorKinds, kinds_of
from unet_seg.evaluation.instances import matches_of, overlaps, pool, scores
from unet_seg.evaluation.metrics import rand_error, variation_of_information
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.instances.methods import resolve, segment
from unet_seg.normalization import normalize_percentile
from unet_seg.training.train import build_datamodule, build_module, follow_the_data
from unet_seg.tuning.search import tune

ISBI_TRAIN, ISBI_TEST = 25, range(25, 30)  # sections 0..24 are read for training (22-24 tune)
TILE = {2: 512, 3: 96}
TEST_IMAGES_2D, TEST_VOLUMES_3D = 16, 4  # the first of each: the test data of earlier runs
# Every line trains with the paper's border weights (sample_2d/3d have none by default), so the
# lines differ only in target, network and post-processing; the boundary is 2 voxels wide
# (conf/experiment/sample_2d_boundary.yaml says why).
WEIGHTS = "data.weight_map={w0:10.0,sigma:5.0}"
BOUNDARY_TARGET = ["data.target=boundary", "data.boundary_width=2.0"]  # the model follows: 3
# Class roles (unet_seg.instances.methods): which class is the object, which background.
NUCLEI = {"foreground_class": 1, "background_class": 0, "interior_class": 1}
CELLS = {"foreground_class": 0, "background_class": 1, "interior_class": 0}  # ISBI: 0 = cell
BOUNDARY = {"foreground_class": 1, "background_class": 0, "interior_class": 1}


@dataclass
class Dataset:
    name: str
    overrides: list[str]  # the experiment's config for the class-map lines
    boundary: list[str]  # what data.target=boundary changes
    classes_roles: dict[str, int]
    test: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (C,*sp), truth


def nuclei2d(workdir: Path) -> Dataset:
    rngs = np.random.default_rng(2012).spawn(TEST_IMAGES_2D)
    test = []
    for rng in rngs:
        inst, profile = samples.nuclei((256, 256), (8.0, 14.0), 40, rng)
        image = np.round(samples.fluorescence(profile, rng, 1.5) * 255)  # stored as uint8
        test.append((normalize_percentile(image[None]), inst))
    return Dataset(
        "nuclei2d",
        ["experiment=sample_2d", WEIGHTS],
        BOUNDARY_TARGET,
        NUCLEI,
        test,
    )


def nuclei3d(workdir: Path) -> Dataset:
    test = []
    for rng in [
        np.random.default_rng(2012),
        *np.random.default_rng(2013).spawn(TEST_VOLUMES_3D - 1),
    ]:
        inst, profile = samples.nuclei((48, 96, 96), (7.0, 11.0), 30, rng, z_scale=0.5)
        image = np.round(samples.fluorescence(profile, rng, (0.75, 1.5, 1.5)) * 65535)  # uint16
        test.append((normalize_percentile(image[None]), inst))
    return Dataset("nuclei3d", ["experiment=sample_3d", WEIGHTS], BOUNDARY_TARGET, NUCLEI, test)


def isbi(workdir: Path) -> Dataset | None:
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        isbi_dir = Path(compose("train", overrides=["experiment=isbi2012_fast"]).paths.isbi_dir)
    if not (isbi_dir / "train-volume.tif").is_file():
        print(f"isbi: skipped, no data at {isbi_dir}")
        return None
    volume = tifffile.imread(isbi_dir / "train-volume.tif")
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    # Training reads only sections 0..24: the test sections never reach the data module.
    tifffile.imwrite(workdir / "train-volume.tif", volume[:ISBI_TRAIN])
    tifffile.imwrite(workdir / "train-labels.tif", labels[:ISBI_TRAIN])
    norm = normalize_percentile(volume[None].astype(np.float32))
    test = [(norm[:, z], ndi.label(labels[z] == 255)[0]) for z in ISBI_TEST]
    data = [
        f"data.images={workdir / 'train-volume.tif'}",
        f"data.labels={workdir / 'train-labels.tif'}",
        "data.val_slices=[22,25]",
    ]
    return Dataset(
        "isbi",
        ["experiment=isbi2012_fast", *data],
        [*BOUNDARY_TARGET, "data.weight_map.foreground=1"],  # the interiors: class 1 now
        CELLS,
        test,
    )


def monai_net(spatial_dims: int, num_classes: int, trim: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    channels = (16, 32, 64, 128, 256) if spatial_dims == 2 else (16, 32, 64, 128)
    net = UNet(
        spatial_dims=spatial_dims,
        in_channels=1,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=2,
        norm="batch",
    )
    wrapped = CroppedSameNet(net, trim, 2 ** (len(channels) - 1), num_classes)
    wrapped.spatial_dims, wrapped.in_channels = spatial_dims, 1  # for the tiled inference
    wrapped.output_shape = lambda shape: tuple(int(s) - trim for s in shape)
    return wrapped


def train(
    overrides: list[str], workdir: Path, budget: float, monai: bool = False,
    make_module=build_module,
):  # fmt: skip
    """Train for ``budget`` seconds; returns ``(network in eval mode, config)``. ``make_module``
    builds the Lightning module from the config (``build_module``: predict's own)."""
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                f"paths.runs_dir={workdir}",
                f"output_dir={workdir}",
                "data.num_workers=0",
            ],
        )
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # reading and weighting stay out of the budget
    follow_the_data(cfg, datamodule)  # 3 classes for the boundary target
    module = make_module(cfg)
    if monai:
        patch = list(cfg.data.patch_size)
        trim = patch[0] - module.model.output_shape(patch)[0]
        module.model = monai_net(cfg.model.spatial_dims, cfg.model.num_classes, trim)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=100_000,
        max_time={"seconds": budget},
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=datamodule)
    print(f"    {trainer.current_epoch} epochs, {trainer.global_step} steps")
    return module.model.eval(), cfg


def tune_split(cfg) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The tune split's ``(C, *spatial)`` images and true objects, from the class-map config."""
    regions = build_datamodule(cfg).validation_regions()
    oc = int(cfg.data.object_class)
    return [r.image for r in regions], [objects_of(r.label, oc, r.instances) for r in regions]


@torch.no_grad()
def probabilities(
    model, images: list[np.ndarray], tta: bool = False, softmax: bool = True
) -> list[np.ndarray]:
    """Per ``(C, *spatial)`` image its tiled prediction ``(K, *spatial)`` (``softmax=False``: the
    model's own outputs, for a model that makes its probabilities itself)."""
    runner = ModelRunner(model, "cpu", tta, softmax=softmax)
    out = []
    for image in images:
        volume = image[:, None] if image.ndim == 3 else image  # a 2D image is one slice
        probs = predict_tiled(volume, model, runner, TILE[model.spatial_dims], batch_size=2)
        out.append(probs[:, 0] if image.ndim == 3 else probs)
    return out


def figures(probs: list[np.ndarray], truths: list[np.ndarray], params, segmenter=segment) -> dict:
    """The test figures of ``segmenter(probs, params)`` (predict's ``segment`` by default)."""
    preds = [segmenter(p, params) for p in probs]
    pairs = list(zip(preds, truths, strict=True))
    tables = [overlaps(p, t) for p, t in pairs]  # matching and error kinds share them
    inst = scores(pool(matches_of(table) for table in tables))
    kinds = sum((kinds_of(table) for table in tables), ErrorKinds())
    rand = [rand_error(p, t) for p, t in pairs]
    vi = [variation_of_information(p, t) for p, t in pairs]
    return {
        "ap50": inst["ap50"],
        "ap": inst["ap"],
        "rand_error": float(np.nanmean(rand)),
        "vi": float(np.nanmean(vi)),
        **kinds.row(),
    }


def run_dataset(
    data: Dataset, workdir: Path, budget: float, tta: bool = False, keep: Path | None = None
) -> dict[str, dict]:
    """Every line's test figures on ``data``; ``keep``: also save each network's tune and test
    probabilities there (``<dataset>_<network>.npz``) for post-processing studies."""
    models = [
        ("ours boundary", [*data.overrides, *data.boundary], False, BOUNDARY, ("seeded",)),
        ("ours classes", data.overrides, False, data.classes_roles, ("cc", "distance")),
        ("MONAI UNet", data.overrides, True, data.classes_roles, ("cc", "distance")),
    ]
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        plain = compose(
            "train",
            overrides=[*data.overrides, f"paths.runs_dir={workdir}", f"output_dir={workdir}"],
        )
    images, truths = tune_split(plain)
    results = {}
    for name, overrides, monai, roles, methods in models:
        print(f"  {data.name}: {name}, training {budget:g} s ...")
        model, _ = train(overrides, workdir / data.name / name.replace(" ", "_"), budget, monai)
        tune_probs = probabilities(model, images, tta)
        test_probs = probabilities(model, [image for image, _ in data.test], tta)
        test_truths = [truth for _, truth in data.test]
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            arrays = {f"tune_{i}": p for i, p in enumerate(tune_probs)}
            arrays |= {f"tune_truth_{i}": t for i, t in enumerate(truths)}
            arrays |= {f"test_{i}": p for i, p in enumerate(test_probs)}
            arrays |= {f"test_truth_{i}": t for i, t in enumerate(test_truths)}
            np.savez_compressed(keep / f"{data.name}_{name.replace(' ', '_')}.npz", **arrays)
        for method in methods:
            start = time.perf_counter()
            tuned = tune(tune_probs, truths, roles, methods=(method,), progress=False)
            params = resolve(tuned)
            line = f"{name} + {method}"
            results[line] = figures(test_probs, test_truths, params)
            results[line]["params"] = tuned["methods"][method]
            results[line]["tune_seconds"] = round(time.perf_counter() - start, 1)
    return results


def print_table(name: str, results: dict[str, dict]) -> None:
    """One row of test figures, error kinds and tuned parameters per line."""
    print(f"\n{name}: test split")
    kinds = ErrorKinds.kinds()
    print(
        f"{'line':28s} {'AP@0.5':>7s} {'mAP':>7s} {'rand err':>9s} {'VI':>7s} "
        + " ".join(f"{k:>6s}" for k in kinds) + "  tuned"
    )  # fmt: skip
    for line, r in results.items():
        print(
            f"{line:28s} {r['ap50']:7.3f} {r['ap']:7.3f} {r['rand_error']:9.4f} {r['vi']:7.3f} "
            + " ".join(f"{r[k]:6d}" for k in kinds) + f"  {r['params']}"
        )  # fmt: skip


def report(name: str, results: dict[str, dict]) -> None:
    print_table(name, results)
    ours = results["ours boundary + seeded"]
    others = {k: v for k, v in results.items() if k != "ours boundary + seeded"}
    best = max(others, key=lambda k: others[k]["ap50"])
    monai = max((k for k in others if k.startswith("MONAI")), key=lambda k: others[k]["ap"])
    print(
        f"boundary+seeded - best other ({best}): AP@0.5 {ours['ap50'] - others[best]['ap50']:+.3f}"
    )
    ratios = ", ".join(
        f"{label} {ratio(ours[key], others[monai][key])}"
        for label, key in (("AP@0.5", "ap50"), ("mAP", "ap"), ("Rand error", "rand_error"),
                           ("VI", "vi"))
    )  # fmt: skip
    print(f"boundary+seeded / {monai}: {ratios}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b > 0 else "n/a (0 in the denominator)"


DATASETS = {"nuclei2d": nuclei2d, "nuclei3d": nuclei3d, "isbi": isbi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per network")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=list(DATASETS),
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="every line (ours and MONAI's) predicts with dihedral TTA (8 views), tune and test",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--keep-probs", type=Path, default=None, help="save each network's probabilities here"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_instances_"))
    print(
        f"{args.budget:g} s training per network, {torch.get_num_threads()} threads, "
        f"TTA {'on' if args.tta else 'off'}, {workdir}"
    )
    everything = {}
    for name in args.datasets:
        data = DATASETS[name](workdir)
        if data is not None:
            everything[name] = run_dataset(data, workdir, args.budget, args.tta, args.keep_probs)
            report(name, everything[name])
    if args.out:
        args.out.write_text(
            json.dumps({"budget": args.budget, "tta": args.tta, **everything}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
