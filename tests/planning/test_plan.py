"""The plan from a fingerprint: expected decisions for known data, memory never overflowed, only
patch sizes the network accepts, the budget and the device as inputs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.planning.conftest import fingerprint, object_grid, write_dataset
from unet_seg.errors import UsageError
from unet_seg.models import UNet
from unet_seg.models.shapes import output_shape
from unet_seg.planning.cost import network_cost
from unet_seg.planning.fingerprint import fingerprint_data
from unet_seg.planning.machine import Budget, Machine, parse_budget
from unet_seg.planning.plan import make_plan

CPU = Machine("cpu", 8 * 2**30, 5e9, 2)
GPU = Machine("cuda", 60 * 2**30, 1e12)
HALF_HOUR = Budget(seconds=1800)


def planned_memory(plan) -> int:
    """The estimated memory of a training step of the planned network (one input channel)."""
    s = plan.settings()
    pooled = (False, True, True) if s["model.inplane_pooling"] else None
    classes = 3 if s["data.target"] == "boundary" else s.get("data.num_classes", 2)
    cost = network_cost(s["data.patch_size"], s["model.features"], 1, classes, "batch", pooled)
    return cost.training_bytes(s["data.batch_size"])


def test_touching_objects_give_a_boundary_target_and_the_expected_plan(tmp_path):
    label = object_grid((64, 96), (10, 12), gap=0)
    images, labels = write_dataset(tmp_path, [label] * 3, (0.5, 0.5))
    plan = make_plan(fingerprint_data(str(images), str(labels)), CPU, HALF_HOUR)
    s = plan.settings()
    assert (s["data.spatial_dims"], s["model.inplane_pooling"]) == (2, False)
    assert s["data.target"] == "boundary" and s["data.label_map"] == "objects"
    assert s["tune_instances"] == "ap" and s["data.weight_map"] == {"w0": 10.0, "sigma": 5.0}
    # 12 px objects: 3 levels see 44 px >= 2 x 12
    assert len(s["model.features"]) == 3
    assert "12 px" in plan.decision("depth").reason
    assert f"100% of {3 * label.max()} objects touch" in plan.decision("target").reason
    assert (s["normalization.low"], s["normalization.high"]) == (1.0, 99.8)
    assert s["data.val_fraction"] == 0.2 and s["trainer.max_time"] == "00:00:30:00"
    # a time budget: only max_time ends the run, the rate anneals over its seconds
    assert s["trainer.max_epochs"] == -1 and s["scheduler.seconds"] == 1800
    assert s["callbacks.early_stopping"] is None
    assert s["trainer.check_val_every_n_epoch"] == 5 and plan.groups["scheduler"] == "cosine_time"
    # one validation window per 64 x 96 image: the output covers it
    assert s["data.val_size"] == plan.decision("inference tile").value
    out = UNet(2, 1, 3, s["model.features"]).output_shape(s["data.val_size"])
    assert out[0] >= 64 and out[1] >= 96
    assert UNet(2, 1, 3, s["model.features"]).output_shape(s["data.patch_size"])


def test_separate_objects_keep_the_classes():
    s = make_plan(fingerprint(), CPU, HALF_HOUR).settings()
    assert s["data.target"] == "classes" and "tune_instances" not in s


@pytest.mark.parametrize(
    ("shape", "spacing", "dims", "inplane"),
    [
        ([48.0, 128.0, 128.0], [1.0, 1.0, 1.0], 3, False),  # isotropic
        ([30.0, 128.0, 128.0], [1.0, 1.0, 1.0], 2, False),  # fewer than 44 slices: ISBI's 30
        ([40.0, 128.0, 128.0], [3.0, 1.0, 1.0], 3, True),  # z 3x coarser: not pooled
        ([12.0, 128.0, 128.0], [3.0, 1.0, 1.0], 2, False),  # fewer than 21 slices for that
    ],
)
def test_spacing_chooses_2d_3d_and_in_plane_pooling(shape, spacing, dims, inplane):
    plan = make_plan(fingerprint(median_shape=shape, spacing=spacing), CPU, HALF_HOUR)
    s = plan.settings()
    assert (s["model.spatial_dims"], s["model.inplane_pooling"]) == (dims, inplane)
    assert len(s["data.patch_size"]) == dims
    assert plan.groups["augment"] == ("anisotropic_3d" if inplane else "default")


def test_data_too_large_for_the_memory_shrinks_the_patch_and_never_overflows():
    objects = {**fingerprint().objects, "p90_extent": [80.0, 80.0]}
    fp = fingerprint(median_shape=[4096.0, 4096.0], objects=objects)
    roomy = make_plan(fp, Machine("cpu", 64 * 2**30, 1e15), HALF_HOUR)
    small = Machine("cpu", 300 * 2**20, 1e15)
    tight = make_plan(fp, small, HALF_HOUR)
    assert tight.settings()["data.patch_size"] < roomy.settings()["data.patch_size"]
    assert "to fit memory" in tight.decision("patch").reason
    assert planned_memory(tight) <= small.memory_bytes
    with pytest.raises(UsageError, match="memory budget 1 MiB is too small"):
        make_plan(fp, Machine("cpu", 2**20, 1e15), HALF_HOUR)


SHAPES = (
    [37.0, 53.0],
    [300.0, 301.0],
    [2000.0, 90.0],
    [9.0, 40.0, 41.0],
    [64.0, 99.0, 131.0],
    [30.0, 200.0, 200.0],
)


@pytest.mark.parametrize(("shape", "memory_mib"), itertools.product(SHAPES, (200, 2000)))
def test_the_plan_never_gives_a_patch_the_network_refuses(shape, memory_mib):
    spacing = [2.5, 1.0, 1.0] if len(shape) == 3 and shape[0] < 40 else [1.0] * len(shape)
    extent = [min(s, 33.0) for s in shape]
    fp = fingerprint(
        median_shape=shape, spacing=spacing, objects={**fingerprint().objects, "p90_extent": extent}
    )
    machine = Machine("cpu", memory_mib * 2**20, 5e9)
    try:
        plan = make_plan(fp, machine, HALF_HOUR)
    except UsageError as err:  # refusing is allowed; overflowing is not
        assert "too small" in str(err)
        return
    s = plan.settings()
    model = UNet(
        s["model.spatial_dims"],
        1,
        2,
        s["model.features"],
        inplane_pooling=s["model.inplane_pooling"],
    )
    assert all(o > 0 for o in model.output_shape(s["data.patch_size"]))
    assert all(o > 0 for o in model.output_shape(plan.decision("inference tile").value))
    assert planned_memory(plan) <= machine.memory_bytes


def test_the_same_data_and_machine_give_the_same_plan():
    assert make_plan(fingerprint(), CPU, HALF_HOUR) == make_plan(fingerprint(), CPU, HALF_HOUR)


def test_half_an_hour_on_a_cpu_plans_a_smaller_network_than_a_night_on_a_gpu():
    fp = fingerprint(median_shape=[1024.0, 1024.0])
    cpu = make_plan(fp, CPU, HALF_HOUR).settings()
    gpu = make_plan(fp, GPU, parse_budget("8h")).settings()
    assert cpu["model.features"][0] < gpu["model.features"][0]
    assert cpu["data.patch_size"] < gpu["data.patch_size"]
    assert "planned for cpu" in make_plan(fp, CPU, HALF_HOUR).decision("device").reason


def test_measured_throughput_replaces_the_estimate():
    calls = []

    def slow(features, patch, batch, inplane):
        calls.append((tuple(features), tuple(patch), batch, inplane))
        return 60.0  # a minute per step: nothing reaches the wanted steps

    plan = make_plan(fingerprint(), CPU, HALF_HOUR, measure=slow)
    assert calls and plan.settings()["model.features"][0] == 16  # the narrowest
    # shrunk for time down to where half the patch is supervised: output 40 = margin 40
    assert plan.settings()["data.patch_size"] == [80, 80]
    assert "60 s" in plan.decision("features").reason


def test_an_epoch_budget_sets_the_epochs_and_no_time_limit():
    s = make_plan(fingerprint(), CPU, parse_budget("20epochs")).settings()
    assert s["trainer.max_epochs"] == 20 and s["trainer.max_time"] is None


def test_absolute_intensities_widen_the_percentiles_and_rare_classes_get_foreground_patches():
    labels = {**fingerprint().labels, "class_fraction": {"0": 0.99, "1": 0.01}}
    ct = fingerprint(intensity=[{**fingerprint().intensity[0], "min": -1024.0}], labels=labels)
    plan = make_plan(ct, CPU, HALF_HOUR)
    s = plan.settings()
    assert (s["normalization.low"], s["normalization.high"]) == (0.5, 99.5)
    assert "down to -1024" in plan.decision("normalization").reason
    assert s["data.foreground_prob"] == 0.5


def test_one_stack_validates_on_its_last_slices_and_one_image_is_refused():
    stack = fingerprint(
        cases=1, median_shape=[50.0, 64.0, 64.0], shapes=[[50, 64, 64]], spacing=[1.0, 1.0, 1.0]
    )
    assert make_plan(stack, CPU, HALF_HOUR).settings()["data.val_slices"] == [40, 50]
    with pytest.raises(UsageError, match=r"/d/images: a single 2D image cannot be split"):
        make_plan(fingerprint(cases=1), CPU, HALF_HOUR)


@pytest.mark.parametrize("text", ["", "30", "30 parsecs", "0min", "2.5epochs", "-3h"])
def test_a_budget_must_be_a_time_or_epochs(text):
    with pytest.raises(UsageError, match="budget="):
        parse_budget(text)


@pytest.mark.parametrize(
    ("values", "label_map", "num_classes"),
    [([0, 1, 2], None, 3), ([0, 255], {0: 0, 255: 1}, 2), ([0, 3, 7], {0: 0, 3: 1, 7: 2}, 3)],
)
def test_class_values_that_are_not_0_to_n_are_mapped_in_order(values, label_map, num_classes):
    labels = {**fingerprint().labels, "kind": "classes", "values": values}
    s = make_plan(
        fingerprint(labels=labels, objects={**fingerprint().objects, "touching_fraction": None}),
        CPU,
        HALF_HOUR,
    ).settings()
    assert s.get("data.label_map") == label_map and s["data.num_classes"] == num_classes


def test_labels_with_nothing_to_segment_are_refused():
    labels = {**fingerprint().labels, "kind": "classes", "values": [0]}
    with pytest.raises(UsageError, match=r"/d/labels: every label voxel is \[0\]"):
        make_plan(fingerprint(labels=labels), CPU, HALF_HOUR)


def test_a_depth_whose_smallest_patch_overflows_the_memory_is_lowered():
    objects = {**fingerprint().objects, "p90_extent": [33.0, 33.0, 33.0]}
    fp = fingerprint(median_shape=[64.0, 99.0, 131.0], spacing=[1.0] * 3, objects=objects)
    fast = 1e15  # time is no constraint here: only the memory lowers the depth
    roomy = make_plan(fp, Machine("cpu", 2000 * 2**20, fast), HALF_HOUR)
    assert len(roomy.settings()["model.features"]) == 4  # 92 px >= 2 x 33
    small = Machine("cpu", 200 * 2**20, fast)
    plan = make_plan(fp, small, HALF_HOUR)
    assert plan.decision("depth").value == len(plan.settings()["model.features"]) == 3
    assert "4-level net's smallest patch overflows" in plan.decision("depth").reason
    assert planned_memory(plan) <= small.memory_bytes


def test_a_depth_that_gets_too_few_steps_in_the_time_budget_is_lowered():
    objects = {**fingerprint().objects, "p90_extent": [80.0, 80.0]}  # 5 levels see 188 px
    fp = fingerprint(median_shape=[512.0, 512.0], objects=objects)
    night = make_plan(fp, GPU, parse_budget("8h"))
    assert night.decision("depth").value == 5
    quick = make_plan(fp, CPU, HALF_HOUR)
    assert quick.decision("depth").value == 4
    assert "5 levels would see the objects whole but get only" in quick.decision("depth").reason


@st.composite
def planning_inputs(draw):
    """A fingerprint (2D or 3D sizes, spacing, object extent) and a machine's memory."""
    dims = draw(st.sampled_from([2, 3]))
    shape = [float(draw(st.integers(5, 3000 if dims == 2 else 400))) for _ in range(dims)]
    spacing = [draw(st.sampled_from([0.5, 1.0, 1.0, 4.0]))] + [1.0] * (dims - 1)
    extent = [float(draw(st.integers(1, 200)))] * dims
    objects = {**fingerprint().objects, "p90_extent": extent}
    memory = draw(st.integers(50, 20_000)) * 2**20
    return fingerprint(median_shape=shape, spacing=spacing, objects=objects), memory


@settings(max_examples=60, deadline=None)  # ~0.4 s; more with --hypothesis-seed
@given(planning_inputs(), st.sampled_from(["5min", "30min", "8h", "20epochs"]))
def test_any_plan_fits_the_network_and_the_memory(inputs, budget):
    fp, memory = inputs
    machine = Machine("cpu", memory, 5e9)
    try:
        plan = make_plan(fp, machine, parse_budget(budget))
    except UsageError as err:  # refusing is allowed; overflowing is not
        assert "too small" in str(err)
        return
    s = plan.settings()
    depth = len(s["model.features"])
    pooled = (False, True, True) if s["model.inplane_pooling"] else None
    for window in (s["data.patch_size"], s["data.val_size"]):  # UNet.output_shape's own rule
        assert all(o > 0 for o in output_shape(window, depth, "valid", pooled))
    assert planned_memory(plan) <= machine.memory_bytes
