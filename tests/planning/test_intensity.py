"""The normalisation rule on synthetic fingerprints: nnU-Net's fixed window where intensities are
absolute and the cases agree (or the user says so), per-image percentiles otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.planning.conftest import fingerprint, object_grid
from tests.planning.test_experiment_file import compose_planned
from unet_seg.errors import UsageError
from unet_seg.io import Volume, write_volume
from unet_seg.planning.experiment_file import write_experiment
from unet_seg.planning.fingerprint import fingerprint_data
from unet_seg.planning.intensity import AGREE, case_spread, normalization
from unet_seg.planning.machine import Budget, Machine
from unet_seg.planning.plan import make_plan
from unet_seg.planning.statistics import CLASSES, Accumulator

CPU = Machine("cpu", 2**30, 5e9, 2)


def ct(cases: list[list[float]], channels: int = 1, fg_std: float = 200.0, **changes):
    """A fingerprint of CT-like intensities (down to -1024) whose cases have the given 0.5/99.5
    percentiles; the whole set's range is -1000..1000."""
    channel = {
        "channel": 0, "mean": -400.0, "std": 500.0, "min": -1024.0, "max": 3071.0,
        "percentiles": {"0.5": -1000.0, "99.5": 1000.0},
        "foreground_percentiles": {"0.5": -100.0, "99.5": 300.0},
        "foreground_mean": 40.0, "foreground_std": fg_std, "case_percentiles": cases,
    }  # fmt: skip
    return fingerprint(intensity=[channel] * channels, channels=channels, **changes)


AGREEING = [[-1000.0, 990.0], [-990.0, 1000.0], [-1000.0, 1000.0]]  # spread 10 of 2000: 0.5 %


def test_absolute_agreeing_cases_get_the_foregrounds_window():
    decision = normalization(ct(AGREEING))
    assert decision.settings == {
        "normalization.window": [-100.0, 300.0], "normalization.mean": 40.0,
        "normalization.std": 200.0,
    }  # fmt: skip
    assert decision.value == "fixed window -100..300, z-score 40/200"
    assert "agree within 0.5% of the range (<= 10%)" in decision.reason
    plan = make_plan(ct(AGREEING), CPU, Budget(900))
    assert "normalization   fixed window -100..300" in plan.summary()


def test_cases_on_different_scales_keep_per_image_percentiles():
    apart = [[-1000.0, 1000.0], [-400.0, 1000.0]]  # lows 600 apart: 30 % of the range
    assert case_spread(ct(apart).intensity[0]) == pytest.approx(0.3) and 0.3 > AGREE
    decision = normalization(ct(apart))
    assert decision.settings == {"normalization.low": 0.5, "normalization.high": 99.5}
    assert "the cases' percentiles differ by 30.0% of the range (> 10%)" in decision.reason
    # A fingerprint from before per-case figures were measured: no window either.
    old = normalization(ct([]))
    assert old.settings == {"normalization.low": 0.5, "normalization.high": 99.5}
    assert "no per-case or foreground figures" in old.reason


def test_microscopy_counts_stay_per_image_even_when_cases_agree():
    counts = fingerprint()  # uint16 from 0
    counts.intensity[0].update(case_percentiles=AGREEING, foreground_mean=500.0,
                               foreground_std=50.0)  # fmt: skip
    assert normalization(counts).settings == {"normalization.low": 1.0, "normalization.high": 99.8}


def test_the_users_choice_wins():
    relative = normalization(ct(AGREEING), "relative")
    assert relative.settings == {"normalization.low": 1.0, "normalization.high": 99.8}
    absolute = normalization(ct([[-1000.0, 1000.0], [0.0, 1000.0]]), "absolute")
    assert absolute.settings["normalization.window"] == [-100.0, 300.0]
    with pytest.raises(UsageError, match="intensity=absolute: one fixed window for 2 channels"):
        normalization(ct(AGREEING, channels=2), "absolute")
    with pytest.raises(UsageError, match="foreground intensities are constant"):
        normalization(ct(AGREEING, fg_std=0.0), "absolute")
    with pytest.raises(UsageError, match="intensity='hu': choose auto, absolute, relative"):
        normalization(ct(AGREEING), "hu")


def test_the_fingerprint_measures_each_case_and_the_foreground():
    rng = np.random.default_rng(0)
    acc = Accumulator(1, CLASSES)
    images = [rng.normal(100 * k, 5, (1, 40, 40)) for k in (1, 2)]
    label = np.zeros((40, 40), np.uint8)
    label[10:20, 10:20] = 1
    for image in images:
        acc.add(image, label)
        acc.end_case()
    channel = acc.summary()["intensity"][0]
    for image, found in zip(images, channel["case_percentiles"], strict=True):
        assert found == pytest.approx(np.percentile(image, (0.5, 99.5)).tolist())
    foreground = np.concatenate([image[0][label > 0] for image in images])
    assert channel["foreground_mean"] == pytest.approx(foreground.mean())
    assert channel["foreground_std"] == pytest.approx(foreground.std())


def test_a_ct_like_dataset_is_planned_with_a_window_that_composes(tmp_path: Path):
    images, labels = tmp_path / "ct" / "images", tmp_path / "ct" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        mask = object_grid((48, 64), (8, 10), 4) > 0
        image = np.where(mask, 60, -1000) + rng.normal(0, 20, mask.shape)
        write_volume(images / f"c{i}.tif", Volume(image.astype(np.int16)))
        write_volume(labels / f"c{i}.tif", Volume(mask.astype(np.uint8)))
    fp = fingerprint_data(str(images), str(labels))
    plan = make_plan(fp, CPU, Budget(900))
    low, high = plan.settings()["normalization.window"]
    assert -40 < low < 60 < high < 160 and 15 < plan.settings()["normalization.std"] < 25
    write_experiment(plan, tmp_path / "plans", "ct")
    cfg = compose_planned(tmp_path / "plans", "ct", tmp_path)
    assert list(cfg.normalization.window) == [low, high]
    assert cfg.data.normalization.mean == plan.settings()["normalization.mean"]
