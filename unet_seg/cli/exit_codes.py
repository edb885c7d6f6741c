"""The console scripts' exit codes, and the one line they end with on Ctrl-C.

Imports nothing heavy, so a command interrupted while Python still imports Hydra, torch or
Lightning (before :func:`unet_seg.cli.errors.reported_errors` is active) ends the same way.
"""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def exit_interrupted(name: str) -> NoReturn:
    """Print ``<name>: interrupted`` on stderr and exit with 130, as a shell reports Ctrl-C."""
    print(f"{name}: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED) from None
