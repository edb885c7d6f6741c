"""How the console scripts report problems: one line per problem on stderr, no Python traceback.

Exit codes: 0 done, 1 a file failed (an input, the checkpoint, the output folder), 2 the command
cannot work as given (a bad override, a missing config value, no inputs), 130 interrupted
(Ctrl-C, or SIGTERM where :func:`sigterm_as_interrupt` is active).
``HYDRA_FULL_ERROR=1`` in the environment, or ``traceback=true`` on the command line, shows the
traceback instead (not ``debug=``: that names the debug run configs of ``conf/debug``).

Hydra's own report of a bad command line spans several lines and always exits 1; the scripts
therefore make Hydra raise (``HYDRA_FULL_ERROR=1`` for the call) and report here instead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import HydraException, InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unet_seg.cli.exit_codes import EXIT_FAILED, EXIT_USAGE, exit_interrupted
from unet_seg.errors import UsageError
from unet_seg.interrupts import clear_stop_request, request_stop

# Set while we force HYDRA_FULL_ERROR, so that processes started meanwhile (DDP workers run
# the same script) do not take it for the user's wish to see tracebacks.
_FORCED = "UNET_SEG_FORCED_HYDRA_FULL_ERROR"
# Lines of Hydra's and OmegaConf's messages that say nothing about the user's problem.
_NOISE = ("object_type=", "See https://hydra.cc", "Set the environment variable HYDRA_FULL_ERROR")


def wants_traceback(cfg: Any = None) -> bool:
    """The user asked for tracebacks: ``HYDRA_FULL_ERROR=1`` (their own) or ``traceback=true``."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_FORCED) != "1":
        return True
    if cfg is not None:
        return hasattr(cfg, "get") and cfg.get("traceback") is True
    return any(arg.lower().lstrip("+") == "traceback=true" for arg in sys.argv[1:])


def one_line(err: BaseException) -> str:
    """The message of ``err`` (and of an OmegaConf cause Hydra wraps) on one line."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"  # not "[Errno 2] No such file...: '/x'"
    text = str(err)
    cause = err.__cause__
    if isinstance(err, HydraException) and isinstance(cause, OmegaConfBaseException):
        text += "\n" + str(cause)
    elif isinstance(err, InstantiationException) and cause is not None and str(cause):
        # "Error in call to target '...':\nValueError('...')\nfull_key: data" -> "data: ..."
        keys = [
            line[len("full_key: ") :] for line in text.splitlines() if line.startswith("full_key: ")
        ]
        text = f"{keys[0]}: {cause}" if keys else str(cause)
    parts: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):
            break  # the rest lists Hydra's search path
        if not line or line.startswith(_NOISE):
            continue
        if raw.startswith("\t"):  # Hydra lists the available options of a group tab-indented
            options.append(line)
            continue
        if options:
            parts[-1] += " " + ", ".join(options)
            options = []
        parts.append(line.rstrip("."))
    if options and parts:
        parts[-1] += " " + ", ".join(options)
    return "; ".join(parts) or type(err).__name__


def exit_code(err: BaseException) -> int:
    """2 for problems of the command line or config, 1 for everything else."""
    usage = (UsageError, HydraException, OmegaConfBaseException)
    if isinstance(err, usage) or type(err).__name__ == "MisconfigurationException":
        return EXIT_USAGE  # Lightning's name for an impossible Trainer setting
    return EXIT_FAILED


def missing_samples_hint(cfg: Any, message: str) -> str:
    """Where ``message`` names a path under ``cfg.paths.data_dir`` and that folder does not
    exist (a wheel installs no samples), how to make the samples; else ``""``."""
    try:
        data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
    except OmegaConfBaseException:  # an interpolation that cannot resolve here
        return ""
    if not data_dir or Path(data_dir).is_dir() or str(data_dir) not in message:
        return ""
    return (
        f"; no samples in {data_dir}: `python -m unet_seg.data.samples --out DIR` writes them, "
        "then pass paths.data_dir=DIR"
    )


def report(name: str, err: BaseException, cfg: Any = None) -> NoReturn:
    """Print ``err`` as one line on stderr and exit with its code."""
    code = exit_code(err)
    expected = code == EXIT_USAGE or isinstance(err, ValueError | OSError | MemoryError)
    message = one_line(err)
    if cfg is not None:
        message += missing_samples_hint(cfg, message)
    if not expected:  # a bug of ours rather than a problem of the input: say how to see more
        message = f"{type(err).__name__}: {message} (HYDRA_FULL_ERROR=1 shows the traceback)"
    print(f"{name}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code) from None


@contextmanager
def reported_errors(name: str, cfg: Any) -> Iterator[None]:
    """Inside a ``@hydra.main`` task: report errors with :func:`report` before Hydra adds its
    own lines (a context manager, not a decorator: Hydra names the job after the task's file)."""
    try:
        yield
    except KeyboardInterrupt:
        exit_interrupted(name)
    except Exception as err:
        if wants_traceback(cfg):
            raise
        report(name, err, cfg)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (``kill``, a batch scheduler's stop) like Ctrl-C: as ``KeyboardInterrupt``,
    so the work in progress cleans up its temporaries and the summary is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        request_stop()  # acted on at the next file or block if this raise is swallowed
        raise KeyboardInterrupt

    clear_stop_request()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        clear_stop_request()


@contextmanager
def _hydra_raises() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", _FORCED)}
    if saved["HYDRA_FULL_ERROR"] != "1":
        os.environ["HYDRA_FULL_ERROR"] = os.environ[_FORCED] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_console_script(name: str, hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function as ``name``: Hydra's errors (bad overrides, unknown config
    options) become one line and exit code 2."""
    show = wants_traceback()
    # tifffile logs each bad tag of a corrupt file at ERROR level; the reader's error says it once.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        with _hydra_raises():
            hydra_main()
    except Exception as err:
        if show:
            raise
        report(name, err)
