"""The "Segment" widget: a model file and an image layer in, a Labels layer out.

The work is :func:`~unet_seg.napari.segment.segment_steps` (no Qt there), run by a napari
``thread_worker`` so the viewer stays responsive: its steps show in the widget and in napari's
activity bar, Cancel stops it before the next step or block, and the loaded model is kept for
the next run (:class:`~unet_seg.napari.segment.ModelCache`). The result gets the input layer's
scale, translation and units, so it lies on the image.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import GeneratorWorker, create_worker

from unet_seg.instances.methods import METHODS
from unet_seg.interrupts import clear_stop_request, request_stop
from unet_seg.napari.reader import class_colours
from unet_seg.napari.segment import (
    DEVICES,
    MODEL_SUFFIXES,
    ModelCache,
    SegmentResult,
    SegmentSettings,
    segment_steps,
    zarr_source,
)

TUNED = "tuned or default"  # the instance method the model file stores, else the default
STEPS = 4  # what segment_steps yields at most: model, layer, predicting, result


def cancellable(steps: Generator[str, None, Any]) -> Generator[str, None, Any]:
    """``steps`` returning None when cancelled (the block loop's KeyboardInterrupt, which a
    worker thread would not catch), the stop request cleared whatever happens."""
    try:
        return (yield from steps)
    except KeyboardInterrupt:
        return None
    finally:
        clear_stop_request()


class SegmentWidget(Container):
    """Model file, image layer, device, tile size, TTA and instances; Segment and Cancel."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.cache = ModelCache()
        self.worker: GeneratorWorker | None = None
        self.model = FileEdit(label="model", mode="r",
                              filter="*.ckpt *.pt *.pth *.onnx *.bioimageio.zip")  # fmt: skip
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.tile_size = SpinBox(label="tile size", value=0, min=0, max=4096,
                                 tooltip="output pixels per window; 0: the default")  # fmt: skip
        self.tta = CheckBox(label="TTA", value=False, tooltip="average 8 flipped/turned views")
        self.instances = CheckBox(label="instances", value=False)
        self.method = ComboBox(label="method", choices=[TUNED, *METHODS], value=TUNED)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.model, self.image, self.device, self.tile_size, self.tta,
                     self.instances, self.method, self.run_button, self.cancel_button,
                     self.status])  # fmt: skip
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)

    def settings(self) -> SegmentSettings:
        method = self.method.value
        return SegmentSettings(
            model=self.model.value, device=self.device.value,
            tile_size=int(self.tile_size.value) or None, tta=bool(self.tta.value),
            instances=bool(self.instances.value),
            instances_method=None if method == TUNED else method,
        )  # fmt: skip

    def start(self) -> GeneratorWorker | None:
        """Start segmenting the chosen layer in a worker thread; the worker, or None (and a
        message) when the choices cannot work."""
        layer = self.image.value
        if layer is None:
            self.status.value = "choose an image layer"
            return None
        model = self.model.value
        if not model or not Path(model).is_file():
            self.status.value = f"choose a model file ({', '.join(MODEL_SUFFIXES)})"
            return None
        if layer.rgb:
            self.status.value = f"{layer.name}: RGB layers are not supported; split the channels"
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        source = zarr_source(layer.source.path, data.shape)
        clear_stop_request()
        worker = create_worker(
            cancellable, segment_steps(data, tuple(layer.scale), self.settings(), self.cache,
                                       source),
            _progress={"total": STEPS, "desc": "unet-seg"},
            # connected here, not after: a worker without an "errored" slot re-raises errors
            _connect={"yielded": self._step, "returned": lambda result: self._add(layer, result),
                      "aborted": lambda: self._step("cancelled"), "errored": self._failed,
                      "finished": self._finished},
            _start_thread=False,
        )  # fmt: skip
        self.worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        worker.start()
        return worker

    def run(self, *_: Any) -> None:
        self.start()

    def cancel(self, *_: Any) -> None:
        """Stop the run: at the next step, or inside the prediction before the next block."""
        if self.worker is not None:
            request_stop()
            self.worker.quit()
            self.status.value = "cancelling..."

    def _step(self, message: str) -> None:
        self.status.value = message

    def _failed(self, err: Exception) -> None:
        # napari's worker also shows it as a notification (with the traceback on demand)
        self.status.value = f"failed: {err}"

    def _finished(self) -> None:
        clear_stop_request()
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _add(self, layer: Any, result: SegmentResult | None) -> None:
        """The result as Labels layers on the input's geometry."""
        if result is None:
            self.status.value = "cancelled"
            return
        n = result.labels.ndim  # a channel axis of the layer is not in the labels
        where = {"scale": layer.scale[-n:], "translate": layer.translate[-n:],
                 "units": layer.units[-n:]}  # fmt: skip
        classes = int(result.labels.max(initial=0)) + 1
        self.viewer.add_labels(result.labels, name=f"{layer.name} labels",
                               colormap=class_colours(classes), **where)  # fmt: skip
        if result.instances is not None:
            features = result.objects or None
            if features and "label" in features:
                features = {"index": features["label"], **features}
            self.viewer.add_labels(result.instances, name=f"{layer.name} objects",
                                   features=features, **where)  # fmt: skip
        self.status.value = "done"
