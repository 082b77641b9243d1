"""The peak RSS of this process, for the benchmarks that measure a fresh interpreter."""

from __future__ import annotations


def peak_rss_bytes() -> int:
    """``VmHWM`` from ``/proc/self/status``: the high-water mark of this program's memory.

    Not ``getrusage(...).ru_maxrss``: Linux carries that across ``exec``, so a child that
    a large process starts reports at least the peak of its parent (a 10 MB interpreter
    started by the 65 MB benchmark process says 65 MB).
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def unshared_bytes() -> int:
    """This program's memory that no other process maps (its USS): ``Private_Clean`` plus
    ``Private_Dirty`` of ``/proc/self/smaps_rollup``."""
    total = 0
    with open("/proc/self/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total
