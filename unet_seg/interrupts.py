"""A stop request that survives Python swallowing it.

The CLIs turn SIGTERM (a scheduler's stop, ``kill``) into ``KeyboardInterrupt`` raised from the
signal handler. Python runs that handler wherever the main thread happens to be; inside a
garbage-collector or weakref callback the exception is printed as "Exception ignored" and lost,
and the run would go on to the end. The handler therefore also sets a flag, and the loops over
files and blocks call :func:`raise_if_stop_requested` before each one.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


def request_stop() -> None:
    """Mark that the run should stop (the SIGTERM handler calls it before raising)."""
    _STOP.set()


def clear_stop_request() -> None:
    _STOP.clear()


def raise_if_stop_requested() -> None:
    """``KeyboardInterrupt`` if a stop was requested and not yet acted on."""
    if _STOP.is_set():
        raise KeyboardInterrupt
