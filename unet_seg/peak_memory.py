"""The peak memory of this process, for benchmarks and memory tests.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not the peak of the program a subprocess runs: Linux
keeps a process's highest resident set across ``exec``, so it counts the pages a child shared
with its parent between ``fork`` and ``exec`` (a child of a 1 GB Python process reports 1 GB
before it allocates anything). ``VmHWM`` in ``/proc/self/status`` belongs to the address space
that ``exec`` created: the program's own peak.
"""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int:
    """The highest resident set size of this program since it started, in bytes
    (``VmHWM``; ``ru_maxrss`` where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def peak_rss_mib() -> float:
    """:func:`peak_rss_bytes` in MiB."""
    return peak_rss_bytes() / 2**20
