"""Where one input's outputs are written: the output factory of the per-file driver.

The driver (:mod:`unet_seg.prediction.driver`) runs the same stages for every input and asks a
sink set for its outputs; the block runner writes into them through one protocol: ``open``
(the blocks already written), ``write(box, data)``, ``read(box)``, ``record(index, info)``,
``records_of()``, ``abort()``.

- :class:`FileSinks`: TIFF, NIfTI and PNG outputs, memory-mapped in this process
  (:class:`~unet_seg.io.slabs.SlabWriter`: a hidden partial name, the disk reserved before any
  work, renamed when the input is complete, removed on an error or an interrupt). A file that
  is not complete is never resumed.
- :class:`ZarrSinks`: zarr / OME-Zarr stores (:class:`~unet_seg.io.zarr.output.ZarrOutput`)
  written by blocks from any process, resumable by fingerprint, committed with their pyramid,
  and registered in the input's ``labels/`` group when written there.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.blockwise.instance_passes import SCRATCH_PREFIX, scratch_outputs, scratch_specs
from unet_seg.blockwise.run import give_up_if_hopeless
from unet_seg.errors import OutputWriteError
from unet_seg.inference.postprocess import label_dtype
from unet_seg.instances.stitch import StitchOptions
from unet_seg.io import open_volume
from unet_seg.io.files import format_suffix
from unet_seg.io.slabs import SlabWriter
from unet_seg.io.zarr.ngff import class_label_mark, class_names, register_label_image
from unet_seg.io.zarr.output import ZarrOutput
from unet_seg.io.zarr.store import ZarrVolume
from unet_seg.prediction.outputs import scratch_path

Box = Sequence[slice]  # a box in the file's spatial axis order


class FileOutput:
    """One :class:`SlabWriter` ``(*lead, *spatial)`` written block by block; the block records
    (``info`` of :func:`~unet_seg.blockwise.task.run_block`) are kept in :attr:`infos`."""

    ome = None  # not an OME-Zarr image: no pyramid, no labels/ group

    def __init__(self, writer: SlabWriter) -> None:
        self.writer, self.path, self.shape = writer, writer.path, writer.shape
        self.infos: dict[int, dict] = {}

    def open(self) -> set[int]:
        """The blocks already written: none (a partial file is never resumed)."""
        return set()

    def write(self, box: Box, data: np.ndarray) -> None:
        self.writer.write_box(tuple(box), data.astype(self.writer.dtype, copy=False))

    def read(self, box: Box) -> np.ndarray:
        return self.writer.read_box(tuple(box))

    def record(self, index: int, info: dict) -> None:
        self.infos[index] = info

    def records_of(self) -> dict[int, dict]:
        return dict(self.infos)

    def abort(self) -> None:
        """Drop the partial file (a failed input leaves nothing)."""
        self.writer.abort()


class FileSinks:
    """Output files of one TIFF / NIfTI / PNG input ``volume`` (its geometry is copied).

    Use as a context manager: the outputs that were asked for are renamed to their names when
    the block ends without an error and removed otherwise; scratch files (the labels only a
    preview needs, the instance passes' local ids) are removed by :meth:`close` in any case.
    """

    in_process_only = True  # the outputs are memory maps of this process

    def __init__(self, path: Path, volume: Any, spatial_dims: int) -> None:
        self.path, self.volume, self.spatial_dims = path, volume, spatial_dims
        self._kept = ExitStack()
        self._scratch: list[SlabWriter] = []

    def __enter__(self) -> FileSinks:
        self._kept.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._kept.__exit__(*exc)

    def probability_dtype(self, wanted: str) -> str:
        """The stored probabilities' dtype: NIfTI has no float16, float32 keeps the values exact
        there."""
        suffix = format_suffix(self.path)
        return "float32" if wanted == "float16" and suffix.startswith(".nii") else wanted

    def _output(self, target: Path, shape: tuple, dtype: Any, keep: bool = True) -> FileOutput:
        writer = SlabWriter(target, shape, dtype, self.volume, self.spatial_dims)
        (self._kept.enter_context if keep else self._scratch.append)(writer)
        return FileOutput(writer)

    def create(
        self, targets: dict[str, Path], spatial: tuple, classes: int, options: Any,
        stitch: StitchOptions | None,
    ) -> dict[str, FileOutput]:  # fmt: skip
        """The labels (a scratch file when only the preview reads them), probabilities and the
        instance passes' scratch files."""
        outputs: dict[str, FileOutput] = {}
        if "labels" in targets or "preview" in targets:
            keep = "labels" in targets
            target = targets.get("labels") or scratch_path(targets["preview"], "labels", ".tif")
            outputs["labels"] = self._output(target, spatial, label_dtype(classes), keep)
        if "probabilities" in targets:
            dtype = self.probability_dtype(options.probability_dtype)
            outputs["probabilities"] = self._output(
                targets["probabilities"], (classes, *spatial), dtype
            )
        if stitch is not None:
            for name, suffix, shape, dtype in scratch_specs(stitch, spatial):
                outputs[name] = self.scratch_maker(targets)(suffix, shape, dtype)
        return outputs

    def open(self, outputs: dict[str, Any]) -> set[int]:
        """The blocks already written: none."""
        return set()

    def scratch_maker(self, targets: dict[str, Path]) -> Any:
        """Makes the instance passes' scratch files beside the instances output."""
        return lambda suffix, shape, dtype: self._output(
            scratch_path(targets["instances"], suffix, ".tif"), shape, dtype, keep=False
        )

    def instance_store(self, spatial: tuple) -> Any:
        """Makes the final instance file ``(target, dtype, fingerprint) -> output``."""
        return lambda target, dtype, key: self._output(target, spatial, dtype)

    def commit(self, outputs: dict[str, Any]) -> None:
        """Nothing to do here: the files are renamed when the ``with`` block ends."""

    def read_back(self, stack: ExitStack, targets: dict[str, Path], outputs: dict, kind: str):
        """A written output for the preview (the labels' scratch file when they were not asked
        for, which is still open)."""
        if kind in targets:
            return stack.enter_context(open_volume(targets[kind]))
        return outputs[kind].writer.array

    def close(self) -> None:
        """Remove the scratch files, whatever happened."""
        for writer in self._scratch:
            writer.abort()


def _ome_of(volume: ZarrVolume) -> dict | None:
    ome = volume.metadata.get("ome")
    if ome is None:
        return None
    axes = [a for a in ome["axes"] if a.get("type", "space") == "space"]
    # An input's time axis of length 1 is kept in front, with its unit and step (NGFF t, c, z...)
    return {"version": ome["version"], "axes": axes, "scale": volume.spacing, "name": ome["name"],
            "time": list(ome.get("time") or ())}  # fmt: skip


class ZarrSinks:
    """Output stores of one zarr / OME-Zarr input ``volume``, chunked like its spatial axes,
    resumable under the fingerprint ``key`` (what must match for a rerun to reuse blocks)."""

    in_process_only = False  # workers reopen the stores by path

    def __init__(self, path: Path, volume: ZarrVolume, spatial: tuple, key: dict) -> None:
        self.path, self.volume, self.key = path, volume, key
        self.chunks = volume.chunks[-len(spatial) :]
        self.ome = _ome_of(volume)
        self._scratch: list[ZarrOutput] = []

    def __enter__(self) -> ZarrSinks:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def probability_dtype(self, wanted: str) -> str:
        """The stored probabilities' dtype: as asked (zarr holds float16 and uint8)."""
        return wanted

    def _label_store(
        self, path: Path, spatial: tuple, dtype: Any, fingerprint: dict, mark: dict | None = None
    ) -> ZarrOutput:
        """A label image store; ``mark``: its ``image-label`` fields (default: none but the
        mark itself, as for instance ids)."""
        return ZarrOutput(path, spatial, dtype, self.chunks, self.ome, True, fingerprint,
                          self.volume.zarr_format, {} if mark is None else mark)  # fmt: skip

    def create(
        self, targets: dict[str, Path], spatial: tuple, classes: int, options: Any,
        stitch: StitchOptions | None,
    ) -> dict[str, ZarrOutput]:  # fmt: skip
        """The labels / probabilities (/ with ``stitch``: the instance passes' scratch) stores."""
        outputs = {}
        if "labels" in targets:
            outputs["labels"] = self._label_store(targets["labels"], spatial, label_dtype(classes),
                                                  self.key, class_label_mark(classes))  # fmt: skip
        if "probabilities" in targets:
            dtype = self.probability_dtype(options.probability_dtype)
            # The channels named as the label store names the classes (NGFF omero).
            ome = self.ome and {**self.ome, "channel_names": class_names(classes)}
            outputs["probabilities"] = ZarrOutput(
                targets["probabilities"], (classes, *spatial), dtype, (1, *self.chunks), ome,
                False, {**self.key, "dtype": dtype}, self.volume.zarr_format,
            )  # fmt: skip
        if stitch is not None:
            outputs.update(scratch_outputs(targets["instances"], stitch, spatial, self.chunks,
                                           self.key, self.volume.zarr_format))  # fmt: skip
        return outputs

    def open(self, outputs: dict[str, ZarrOutput]) -> set[int]:
        """Create or reopen the stores; the blocks every one of them has recorded. A store that
        cannot be created (a full disk) removes the others and raises."""
        try:
            return set.intersection(*[o.open() for o in outputs.values()])
        except OutputWriteError as err:
            give_up_if_hopeless(self.path, [err], outputs)
            raise

    def scratch_maker(self, targets: dict[str, Path]) -> None:
        """None: the instance passes make their zarr scratch beside the local ids."""
        return None

    def instance_store(self, spatial: tuple) -> Any:
        """Makes the final instance store ``(target, dtype, fingerprint) -> output``."""
        return lambda target, dtype, key: self._label_store(target, spatial, dtype, key)

    def commit(self, outputs: dict[str, ZarrOutput]) -> None:
        """Commit every store (last, so an interrupted run finds all partial stores); on a
        full disk none of the input's outputs stays. Scratch entries of ``outputs`` (the
        instance passes') are taken out and removed by :meth:`close`."""
        self._scratch = [outputs.pop(n) for n in list(outputs) if n.startswith(SCRATCH_PREFIX)]
        committed: list[Path] = []
        for output in outputs.values():
            try:
                committed.append(output.commit())
            except OutputWriteError:
                for done_output in [*outputs.values(), *self._scratch]:
                    done_output.abort()
                for store in committed:
                    shutil.rmtree(store, ignore_errors=True)
                raise
            if output.path.parent == Path(self.path) / "labels" and output.ome is not None:
                register_label_image(self.path, output.path.name, output.ome["version"])

    def read_back(self, stack: ExitStack, targets: dict[str, Path], outputs: dict, kind: str):
        """A committed store for the preview."""
        return ZarrVolume(targets[kind])

    def close(self) -> None:
        """Remove the local ids and maps, once the final ids are in place."""
        for store in self._scratch:
            store.abort()
