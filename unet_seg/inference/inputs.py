"""What prediction reads: a file's layout for a model, and normalised slabs of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io import LazyVolume, open_volume
from unet_seg.io.channel_files import ChannelFiles, InputFiles
from unet_seg.io.colour import COLOUR_KINDS, to_luminance
from unet_seg.io.limits import check_voxels
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import clip_values, scale_to_unit


@dataclass(frozen=True)
class Layout:
    """How a file's array maps onto the model's ``(C, Z, Y, X)`` view.

    ``channels``: the file has a leading channel axis. ``spatial_dims``: spatial axes of the file
    (2: an image, seen as one slice). ``slice_axis``: the spatial axis a 2D model slices along.
    ``luminance``: the colour kind (``"rgb"``, ``"rgba"``, ``"grey+alpha"``) a one-channel model
    sees as grey (:func:`unet_seg.io.colour.to_luminance`); None: channels go in as they are.
    ``channel``: the one channel of the file a one-channel model reads (predict's ``channel``
    option); None: all of them (or the luminance).
    """

    channels: bool
    spatial_dims: int
    slice_axis: int = 0
    luminance: str | None = None
    channel: int | None = None

    @property
    def channel_index(self) -> slice:
        """The index of the file's channel axis that the model reads (one channel kept as an
        axis of length 1)."""
        return slice(None) if self.channel is None else slice(self.channel, self.channel + 1)

    def spatial_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The file's spatial shape, without its channel axis: what the outputs have."""
        return tuple(shape[1:] if self.channels else shape)

    def volume_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(Z, Y, X)`` seen by the tiling: the slice axis first, a 2D image one slice thick."""
        spatial = list(shape[1:] if self.channels else shape)
        if self.spatial_dims == 2:
            return (1, *spatial)
        spatial.insert(0, spatial.pop(self.slice_axis))
        return tuple(spatial)


def input_layout(
    path: Path,
    shape: tuple[int, ...],
    model: SegmentationNetwork,
    slice_axis: int = 0,
    channel_kind: str | None = None,
    axes: str | None = None,
    channel: int | None = None,
) -> Layout:
    """Check that an array of ``shape`` fits ``model`` and say how; ``ValueError`` names ``path``.

    A 2D model takes ``(Y, X)`` images and ``(Z, Y, X)`` stacks (slice by slice along
    ``slice_axis``), a 3D model ``(Z, Y, X)`` volumes; models with ``C > 1`` input channels take
    the same with a leading channel axis of size ``C``. ``channel_kind`` is the reader's
    ``metadata["channels"]``: a one-channel model sees colour as luminance and refuses
    separate channels (:mod:`unet_seg.io.colour`). ``axes``: the reader's ``metadata["axes"]``
    (``"CZYX"``, ...); a declared channel axis of length 1 (OME-Zarr's ``c`` of a grey image)
    is the one input channel of a one-channel model. ``channel``: which channel of a file with
    a declared channel axis (separate channels or colour samples) a one-channel model reads.
    """
    declared = channel_kind is not None or (axes or "").startswith("C")
    if channel is not None:
        return _one_channel(path, shape, model, slice_axis, declared, channel)
    if int(model.in_channels) == 1 and declared:
        if channel_kind in COLOUR_KINDS or shape[0] == 1:
            plain = input_layout(path, shape[1:], model, slice_axis)
            luminance = channel_kind if channel_kind in COLOUR_KINDS else None
            return Layout(True, plain.spatial_dims, plain.slice_axis, luminance)
        raise ValueError(
            f"{path}: {shape[0]} separate channels (shape {shape}), but the model takes one: "
            f"choose one with channel=0..{shape[0] - 1}"
        )
    channels = int(model.in_channels) > 1
    spatial = len(shape) - int(channels)
    allowed = (2, 3) if model.spatial_dims == 2 else (3,)
    time = (axes or "")[:1] == "T" and len(axes) == len(shape)
    volumes = len(shape) > 3  # time points of volumes (TZYX): no model takes them as they are
    if time and (model.spatial_dims == 3 or channels or slice_axis != 0 or volumes):
        # Time points are never read as channels or as space: only planes taken one by one.
        advice = "" if volumes else ("a 2D one-channel model predicts them plane by plane "
                                     "(slice_axis=0), else ")  # fmt: skip
        raise ValueError(
            f"{path}: axes {axes}: the leading axis holds {shape[0]} time points, which a "
            f"{model.spatial_dims}D model with {model.in_channels} input channel(s) would read "
            f"as {'channels' if channels or volumes else 'space'}; {advice}save one file per "
            "time point"
        )
    if spatial not in allowed or (channels and shape[0] != model.in_channels):
        lead = f"({model.in_channels}, ...)" if channels else "no channel axis"
        raise ValueError(
            f"{path}: array of shape {shape} does not fit a {model.spatial_dims}D model with "
            f"{model.in_channels} input channel(s): expected {' or '.join(map(str, allowed))} "
            f"spatial axes and {lead}"
        )
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    if model.spatial_dims == 3 and slice_axis != 0:
        raise ValueError("slice_axis applies to 2D models only")
    return Layout(channels, spatial, slice_axis if spatial == 3 else 0)


def check_channel_option(channel: int | None, model: SegmentationNetwork) -> None:
    """``ValueError`` unless predict's ``channel`` (which channel of a file a one-channel model
    reads) is unset or the model takes one channel."""
    if channel is not None and int(model.in_channels) != 1:
        raise ValueError(
            f"channel={channel} picks the input of a one-channel model, but this model takes "
            f"{model.in_channels} channels (leave channel unset)"
        )


def _one_channel(
    path: Path,
    shape: tuple[int, ...],
    model: SegmentationNetwork,
    slice_axis: int,
    declared: bool,
    channel: int,
) -> Layout:
    """:func:`input_layout` where predict's ``channel`` picks one channel of the file."""
    check_channel_option(channel, model)
    if not declared:
        raise ValueError(
            f"{path}: no channel axis (shape {shape}, read as {len(shape)} spatial axes), so "
            f"channel={channel} does not apply: leave channel unset for this file"
        )
    if not 0 <= channel < shape[0]:
        raise ValueError(
            f"{path}: channel={channel}, but the file has channels 0..{shape[0] - 1} "
            f"(shape {shape})"
        )
    plain = input_layout(path, shape[1:], model, slice_axis)
    return Layout(True, plain.spatial_dims, plain.slice_axis, channel=channel)


def region_reader(
    volume: LazyVolume | np.ndarray,
    layout: Layout,
    lo: float,
    hi: float,
    clip: tuple[float, float] | None = None,
) -> Callable[[tuple[slice, slice, slice]], np.ndarray]:
    """``(z, y, x) slices -> (C, *box)`` float32 input normalised so that ``lo``/``hi`` map to
    0/1 (as in training: clipped to ``clip`` first where a fixed window gives one, else not).
    The box is in the tiling's ``(Z, Y, X)`` order (the slice axis first, see :class:`Layout`);
    only the box is read from ``volume``.

    Every read is checked for NaN/Inf (a ``ValueError`` naming the file and the region): the
    percentiles come from a sample, which may miss them, and they would spread through the
    network into NaN probabilities.
    """
    path = getattr(volume, "path", None)

    def read(box: tuple[slice, slice, slice]) -> np.ndarray:
        if layout.spatial_dims == 2:
            rows = volume[(layout.channel_index, *box[1:]) if layout.channels else box[1:]]
            rows = rows[:, None] if layout.channels else rows[None, None]
        else:
            index = [box[1], box[2]]
            index.insert(layout.slice_axis, box[0])
            rows = volume[(layout.channel_index, *index) if layout.channels else tuple(index)]
            rows = rows if layout.channels else rows[None]
            rows = np.moveaxis(rows, 1 + layout.slice_axis, 1)
        if rows.dtype.kind in "fc" and not np.isfinite(rows).all():
            bad = int(rows.size - np.count_nonzero(np.isfinite(rows)))
            where = (
                "" if layout.spatial_dims == 2 else f" in rows {box[0].start}..{box[0].stop - 1}"
            )
            where += f" along axis {layout.slice_axis}" if where else ""
            raise ValueError(f"{path}: {bad} NaN/Inf values in the image data{where}")
        return scale_to_unit(clip_values(rows, clip), lo, hi)

    return read


class SpatialView:
    """A volume ``(C, *spatial)`` seen as one ``(*spatial)`` image, read lazily region by
    region; subclasses say how the channels become one in ``__getitem__``."""

    def __init__(self, volume: Any) -> None:
        self.volume = volume
        self.shape = tuple(volume.shape[1:])
        self.path = getattr(volume, "path", None)


class ChannelView(SpatialView):
    """One channel of a volume ``(C, *spatial)`` seen as ``(*spatial)`` (what the intensity
    percentiles of a one-channel model are taken from)."""

    def __init__(self, volume: Any, channel: int) -> None:
        super().__init__(volume)
        self.channel = channel

    def __getitem__(self, index: object) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        return np.asarray(self.volume[(self.channel, *index)])


def model_input(volume: Any, layout: Layout) -> Any:
    """What of ``volume`` the model reads, for its intensity percentiles: the volume, or the
    channel ``layout`` picks (:class:`ChannelView`)."""
    return volume if layout.channel is None else ChannelView(volume, layout.channel)


class LuminanceView(SpatialView):
    """A colour volume ``(C, *spatial)`` seen as its grey ``(*spatial)`` luminance (what a
    one-channel model is given; :func:`unet_seg.io.colour.to_luminance`)."""

    def __init__(self, volume: LazyVolume, kind: str) -> None:
        super().__init__(volume)
        self.kind = kind

    def __getitem__(self, index: object) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        return to_luminance(self.volume[(slice(None), *index)], self.kind)[0]


def open_input(
    path: InputFiles, model: SegmentationNetwork, options: Any
) -> tuple[Any, Any, Layout]:
    """``(volume, source, layout)``: the lazily opened file (or a case's channel files, one
    ``(C, *spatial)`` volume: :mod:`unet_seg.io.channel_files`), what the model reads of it (the
    volume, or its luminance for a colour image and a one-channel model) and how it reads it.
    ``options``: :class:`~unet_seg.inference.options.PredictOptions` (``max_voxels``,
    ``slice_axis``, ``channel``)."""
    if isinstance(path, tuple):
        volume = ChannelFiles([open_volume(p, max_voxels=options.max_voxels) for p in path])
        check_voxels(path[0], volume.shape, options.max_voxels)
        path = path[0]
    else:
        volume = open_volume(path, max_voxels=options.max_voxels)
    kind = volume.metadata.get("channels")
    axes = volume.metadata.get("axes")
    layout = input_layout(path, volume.shape, model, options.slice_axis, kind, axes,
                          options.channel)  # fmt: skip
    if layout.luminance is None:
        return volume, volume, layout
    return volume, LuminanceView(volume, kind), replace(layout, channels=False, luminance=None)
