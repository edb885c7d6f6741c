"""The plugin in a real napari viewer on a virtual display: the Segment widget through its
thread worker, the reader and the samples through napari, and a screenshot of the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the napari extra is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

from unet_seg.io import Volume, read_volume, write_volume  # noqa: E402
from unet_seg.napari.widget import SegmentWidget  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:System theme detection:UserWarning")
SCALE = (2.0, 0.5, 0.5)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored


@pytest.fixture
def viewer(display, make_napari_viewer):
    return make_napari_viewer()


@pytest.mark.slow  # two runs through napari's worker thread
def test_segment_widget_adds_the_cli_labels_on_the_image(viewer, qtbot, ckpt_2d, stack_file,
                                                         cli_outputs):  # fmt: skip
    volume = read_volume(stack_file)
    image = viewer.add_image(volume.array, name="stack", scale=SCALE, units="micrometer")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.model.value, widget.image.value = ckpt_2d, image
    steps: list[str] = []
    shown = widget._step
    widget._step = lambda message: (steps.append(message), shown(message))
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert steps[-2:] == ["predicting", "reading the result"]
    labels = viewer.layers["stack labels"]
    assert isinstance(labels, napari.layers.Labels)
    np.testing.assert_array_equal(labels.data, read_volume(cli_outputs / "stack_labels.tif").array)
    assert tuple(labels.scale) == SCALE and labels.units == image.units
    assert widget.status.value == "done" and widget.run_button.enabled
    # The model stays loaded for the next run; instances come with their object table.
    widget.instances.value, widget.method.value = True, "cc"
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.cache.loads == 1
    assert [layer.name for layer in viewer.layers] == ["stack", "stack labels", "stack labels [1]",
                                                        "stack objects"]  # fmt: skip
    objects = viewer.layers["stack objects"]
    present = set(np.unique(objects.data).tolist()) - {0}
    assert present and set(objects.features["index"].tolist()) == present
    assert tuple(objects.scale) == SCALE


def test_cancel_adds_nothing(viewer, qtbot, ckpt_2d, stack_file):
    image = viewer.add_image(read_volume(stack_file).array, name="stack", scale=SCALE)
    widget = SegmentWidget(viewer)
    widget.model.value, widget.image.value = ckpt_2d, image
    widget.start()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.status.value == "cancelled" and widget.worker is None


def test_a_bad_model_file_is_reported_by_name(viewer, qtbot, tmp_path):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    image = viewer.add_image(np.zeros((20, 20), np.uint8), name="zeros")
    widget = SegmentWidget(viewer)
    widget.model.value, widget.image.value = bad, image
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("failed: ") and "broken.ckpt" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["zeros"] and widget.run_button.enabled


def test_without_a_layer_or_a_model_the_widget_says_so(viewer, ckpt_2d):
    widget = SegmentWidget(viewer)
    widget.model.value = ckpt_2d
    assert widget.start() is None and widget.status.value == "choose an image layer"
    grey = viewer.add_image(np.zeros((20, 20), np.uint8))
    widget.reset_choices()  # what napari does for a docked widget when layers change
    widget.image.value = grey
    widget.model.value = ckpt_2d.parent  # a folder
    assert widget.start() is None and widget.status.value.startswith("choose a model file")
    rgb = viewer.add_image(np.zeros((20, 20, 3), np.uint8), rgb=True, name="rgb")
    widget.reset_choices()
    widget.image.value = rgb
    widget.model.value = ckpt_2d
    assert widget.start() is None and "RGB" in widget.status.value


def test_napari_opens_our_outputs_through_the_plugin(viewer, cli_outputs):
    [labels] = viewer.open(cli_outputs / "stack_labels.tif", plugin="unet-seg")
    [objects] = viewer.open(cli_outputs / "stack_instances.tif", plugin="unet-seg")
    assert isinstance(labels, napari.layers.Labels) and isinstance(objects, napari.layers.Labels)
    assert tuple(labels.scale) == SCALE and str(labels.units[0]) == "micrometer"
    present = set(np.unique(objects.data).tolist()) - {0}
    assert set(objects.features["index"].tolist()) == present
    probs = viewer.open(cli_outputs / "stack_probs.tif", plugin="unet-seg")
    assert [p.name for p in probs] == ["stack_probs p(background)", "stack_probs p(class 1)"]


def test_the_samples_open_in_one_click(viewer):
    viewer.open_sample("unet-seg", "nuclei_2d")
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds == {"nuclei 2D": "Image", "nuclei 2D labels": "Labels",
                     "nuclei 2D objects": "Labels"}  # fmt: skip
    assert tuple(viewer.layers["nuclei 2D"].scale) == (0.5, 0.5)
    assert viewer.layers["nuclei 2D objects"].data.max() > 10


def test_screenshot_shows_the_label_colours(display, make_napari_viewer, tmp_path):
    """A shown viewer (a hidden one renders black on Mesa) with a class map of two squares:
    the screenshot holds each class's colour from the layer's colormap, over about its area."""
    labels = np.zeros((60, 80), np.uint8)
    labels[10:40, 10:40], labels[20:50, 50:75] = 1, 2
    path = write_volume(tmp_path / "squares_labels.tif", Volume(labels, spacing=(0.5, 0.5)))
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(path, plugin="unet-seg")
    layer.opacity = 1.0  # the colours as they are, not blended with the black canvas
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    for folder in (tmp_path, ARTIFACTS):
        folder.mkdir(exist_ok=True)
        viewer.screenshot(folder / "napari_labels.png", canvas_only=True, flash=False)
        print(f"screenshot: {folder / 'napari_labels.png'}")
    assert (ARTIFACTS / "napari_labels.png").stat().st_size > 0
    rgb = shot[..., :3].reshape(-1, 3).astype(int)
    covered = {}
    for value in (1, 2):
        colour = np.round(np.asarray(layer.colormap.map(value))[:3] * 255)
        covered[value] = np.all(np.abs(rgb - colour) <= 2, axis=1).mean()
    # Square 1 is 900 pixels, square 2 750, of 4800: the same ratio on the screen.
    assert covered[1] > 0.05 and covered[2] > 0.05
    assert covered[1] / covered[2] == pytest.approx(900 / 750, rel=0.1)
    assert np.any(np.all(rgb == 0, axis=1))  # the background is transparent: black canvas
