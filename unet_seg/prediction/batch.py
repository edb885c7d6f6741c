"""Batch prediction: every input of the run, each through :func:`predict_file`, then a summary.

``predict(cfg)`` is what ``unet-seg-predict`` runs (``conf/predict.yaml``); tests call it directly.
Outputs land in ``output_dir`` in the input's format, named ``<stem>_labels<suffix>`` (class
indices), ``<stem>_probs<suffix>`` (``(K, *spatial)`` probabilities; TIFF for PNG inputs) and
``<stem>_instances<suffix>``, ``<stem>_preview.png`` (a few slices with the labels overlaid), plus
``predict_summary.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from unet_seg.blockwise.engine import check_cluster, make_engine
from unet_seg.blockwise.run import BlockFailures, BlockOptions
from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.inference.inputs import check_channel_option
from unet_seg.inference.options import PredictOptions
from unet_seg.inference.runner import RunnerOptions
from unet_seg.instances.methods import warn_if_tuned_otherwise
from unet_seg.interrupts import raise_if_stop_requested
from unet_seg.io.atomic import write_error, write_json_atomic
from unet_seg.io.channel_files import describe, group_channel_files
from unet_seg.io.files import find_files, is_directory_format
from unet_seg.io.output_lock import output_locks
from unet_seg.io.sweep import sweep_stale_temporaries
from unet_seg.models.ensemble import CheckpointSpec, checkpoint_spec, load_ensemble
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import DEFAULT_PERCENTILES, check_normalization
from unet_seg.prediction.driver import predict_file
from unet_seg.prediction.outputs import VOLUME_KINDS, is_complete, is_output, plan_outputs
from unet_seg.prediction.ownership import OutputRegister
from unet_seg.prediction.provenance import (
    LEDGER_KEY,
    SUMMARY_NAME,
    OutputLedger,
    checkpoint_id,
    run_fingerprint,
    runner_record,
)

log = logging.getLogger(__name__)


def _load_model(checkpoint: CheckpointSpec) -> tuple[SegmentationNetwork, dict, dict | None]:
    try:
        return load_ensemble(checkpoint)
    except FileNotFoundError as err:
        raise InputNotFoundError(
            f"{err}: train the sample model first with `unet-seg-train experiment=sample_2d`, "
            "or pass checkpoint=<a .ckpt, or a .onnx / .pt / .bioimageio.zip from unet-seg-export>"
        ) from err


def _normalization(cfg: Any, stored: dict) -> dict:
    """The percentiles to normalise with: the config's, else the checkpoint's; a clear error
    for nonsense (``low >= high``, NaN, not numbers) naming where it came from."""
    given = cfg.get("normalization")
    norm = dict(given) if given else stored
    try:
        check_normalization(norm)
    except (TypeError, ValueError) as err:
        if given:
            raise UsageError(f"normalization={norm}: {err}") from err
        raise ValueError(
            f"{cfg.checkpoint}: the normalisation stored in the checkpoint ({norm}) is unusable: "
            f"{err}; pass normalization={{low: {DEFAULT_PERCENTILES['low']}, high: "
            f"{DEFAULT_PERCENTILES['high']}}} to override it"
        ) from err
    return norm


def _output_settings(
    cfg: Any, options: PredictOptions, norm: dict, running: RunnerOptions
) -> dict[str, Any]:
    """What besides the weights shapes the outputs (not speed, memory or progress options), for
    the fingerprint that tells a complete output of this run from a stale one."""
    settings = {
        key: options_value
        for key, options_value in asdict(options).items()
        if key not in ("batch_size", "progress", "max_voxels", "preview_slices", "instances")
    }
    if cfg.outputs.get("instances"):
        settings["instances"] = asdict(options.instances)
    return {**settings, "normalization": norm, "tta": running.tta,
            "precision": running.precision, "runtime": running.runtime,
            "input_level": cfg.get("input_level"),
            "mask": cfg.get("mask")}  # fmt: skip


def refuse_foreign_outputs(register: OutputRegister, outputs: list[Path]) -> None:
    """Refuse, before any work, to replace files or stores at output names that this project
    did not write (:mod:`unet_seg.prediction.ownership`).

    Raises:
        UsageError: naming the first such output and how many there are.
    """
    foreign = register.foreign(outputs)
    if foreign:
        more = f" (and {len(foreign) - 1} more like it)" if len(foreign) > 1 else ""
        raise UsageError(
            f"{foreign[0]}: exists and was not written by unet-seg{more}; move it away, or "
            "pass overwrite=true to replace it"
        )


def predict(cfg: Any) -> dict:
    """Predict every input of ``cfg.input`` into ``cfg.output_dir``; returns the run summary.

    A file that cannot be read or predicted is reported by name and skipped; ``summary["failed"]``
    counts them. Complete existing outputs are kept unless ``cfg.overwrite``. Temporaries a killed
    run left in ``output_dir`` are removed first. On ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM
    where the CLI turns it into one) the file in progress leaves nothing behind, the summary is
    written with ``"interrupted": true``, and the interrupt goes on.

    Raises:
        UsageError: two inputs would write the same output, or no output is enabled.
    """
    started = time.time()
    cluster = cfg.get("cluster") or {"kind": "none"}
    check_cluster(cluster)
    checkpoint = checkpoint_spec(cfg.checkpoint)  # one path, or an ensemble's (a tuple)
    model, stored, tuning = _load_model(checkpoint)
    if isinstance(checkpoint, tuple):
        log.info("ensemble of %d checkpoints: %s", len(checkpoint), ", ".join(checkpoint))
    # precision=auto measured and decided once here; Dask workers get the decided options.
    running, precision_reason = RunnerOptions.from_config(cfg).resolve(model)
    norm = _normalization(cfg, stored)
    instances = bool(cfg.outputs.get("instances"))
    tuned = tuning if instances else None
    options = PredictOptions.from_config(cfg, tuned)
    try:
        check_channel_option(options.channel, model)  # before any file is read
    except ValueError as err:
        raise UsageError(str(err)) from None
    if instances:
        options.instances.check_classes(int(model.num_classes))  # before any file is predicted
    if tuned:
        log.info("instances: %s, tuned by unet-seg-tune (%s %.4f)", options.instances.method,
                 tuned.get("objective"), tuned.get("score", float("nan")))  # fmt: skip
        warn_if_tuned_otherwise(tuned, running.tta)
    out_dir = Path(cfg.output_dir)
    outputs = dict(cfg.outputs)
    if not any(outputs.get(kind) for kind in VOLUME_KINDS):
        raise UsageError("no outputs enabled (outputs.labels/probabilities/instances)")
    # Our own outputs are not inputs, e.g. when output_dir is the input folder.
    files = [f for f in find_files(cfg.input) if not is_output(f, out_dir)]
    # nnU-Net's <case>_0000, <case>_0001, ...: one input per case, outputs named after it.
    inputs = group_channel_files(files, int(model.in_channels))
    plan = plan_outputs(inputs, out_dir, outputs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(out_dir, err) from err
    every_output = [t for targets in plan.values() for t in targets.values()]
    sweep_stale_temporaries(every_output, started)
    fingerprint = run_fingerprint(
        checkpoint_id(checkpoint), _output_settings(cfg, options, norm, running)
    )
    ledger = OutputLedger(out_dir)
    register = OutputRegister(out_dir, ledger.entries)
    if not cfg.overwrite:
        refuse_foreign_outputs(register, every_output)
    runner = running.runner(model)
    entries, start, interrupted = [], time.perf_counter(), False
    bar = tqdm(
        inputs,
        desc="files",
        unit="file",
        disable=None if cfg.progress is None else not cfg.progress,
    )
    block = BlockOptions.from_config(cfg, running)
    # Dask (when configured) starts only for chunked inputs, which run block by block.
    chunked = any(map(is_directory_format, files))
    if not chunked and str(cluster.get("kind", "none")) != "none":
        log.warning("cluster.kind=%s serves zarr / OME-Zarr inputs; these files run in-process "
                    "(unet-seg-convert makes OME-Zarr of them)", cluster.get("kind"))  # fmt: skip
    engine = make_engine(cluster) if chunked else None
    steal_locks = bool(cfg.get("steal_locks", False))
    try:
        for path in bar:
            targets = plan[path]
            entry: dict[str, Any] = {
                "input": describe(path),
                "outputs": [str(p) for kind, p in targets.items() if kind != "preview"],
            }
            if "preview" in targets:
                entry["preview"] = str(targets["preview"])
            try:
                raise_if_stop_requested()  # a SIGTERM Python swallowed still stops the batch
                with output_locks(targets.values(), steal_locks):  # one run per output
                    complete = not cfg.overwrite and is_complete(path, targets, model, options)
                    if complete and ledger.made_by(targets, fingerprint):
                        entry["status"] = "skipped"
                    else:
                        if complete:
                            log.warning("%s: its outputs were made with another checkpoint or "
                                        "other settings: predicting it again",
                                        describe(path))  # fmt: skip
                        register.claim(targets)
                        try:
                            entry.update(predict_file(path, targets, model, runner, options,
                                                      norm, block, engine))  # fmt: skip
                        finally:
                            register.settle(targets)
                        ledger.record(targets, fingerprint)
                        entry["status"] = "ok"
            except KeyboardInterrupt:
                entry["status"], interrupted = "interrupted", True
            except Exception as err:  # one bad file must not stop the batch; it is reported by name
                # The reason goes to the summary and the CLI's line on stderr, not the log too.
                if isinstance(err, BlockFailures):
                    entry["blocks"] = err.counts
                entry.update(status="failed", error=f"{type(err).__name__}: {err}")
            entries.append(entry)
            log.info("%s: %s", describe(path), entry["status"])
            if interrupted:
                break
    finally:
        if engine is not None:
            engine.close()
    summary = {
        "checkpoint": list(checkpoint) if isinstance(checkpoint, tuple) else str(checkpoint),
        "output_dir": str(out_dir),
        "device": str(runner.device),
        "runner": runner_record(runner, precision_reason),
        "instances": asdict(options.instances) if cfg.outputs.get("instances") else None,
        "files": entries,
        "ok": sum(e["status"] == "ok" for e in entries),
        "skipped": sum(e["status"] == "skipped" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "interrupted": interrupted,
        "seconds": round(time.perf_counter() - start, 3),
    }
    summary[LEDGER_KEY] = ledger.merged()
    write_json_atomic(out_dir / SUMMARY_NAME, summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary
