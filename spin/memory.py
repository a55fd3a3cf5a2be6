"""Peak resident memory of a stretch of work, for the costs every stage records.

The kernel keeps a process's high-water mark of resident memory (``VmHWM``) and lets the
process reset it to the current resident size (writing ``5`` to ``/proc/self/clear_refs``),
so a stage's own peak is read without a profiler or a sampling thread: reset at the start,
read at the end. Stages nest (a training stage may build the reference pass it needs), so
meters form a stack: an inner meter's reset would hide what the outer stage reached before
it, so the outer one takes that into account when the inner one starts, and its peak when it
ends.

A reset also resets what ``getrusage`` (and so ``/usr/bin/time``) reports as the process's
maximum resident size: a job's own peak is the meter around the whole job (report.json's
``peak_memory_gb``), which takes its stages' peaks into account.

Where the kernel offers neither file (macOS, Windows) the peak is unknown and reported as
None rather than as the process's lifetime peak, which would mislabel an earlier stage's
memory as this one's.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # clear_refs' code for "reset the peak resident set size"
GB = 1e9


@dataclass
class Meter:
    """One measured stretch; ``peak_gb`` is set when it ends (None where unmeasurable)."""

    reached_bytes: int = 0  # the peak before the last reset (an inner meter's start or end)
    peak_gb: float | None = None


# Allocations from this size up get pages of their own, returned to the system when freed
# (glibc's M_MMAP_THRESHOLD; mallopt's code for it): during training, and afterwards.
TRAINING_MMAP_THRESHOLD_BYTES = 4 * 2**20
GLIBC_MMAP_THRESHOLD_MAX_BYTES = 32 * 2**20
M_MMAP_THRESHOLD = -3

_open: list[Meter] = []


def high_water_bytes() -> int | None:
    """The process's peak resident memory since the last reset, in bytes (None: unknown)."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def reset_high_water() -> bool:
    """Reset the peak to the current resident size; whether the kernel allowed it."""
    try:
        CLEAR_REFS.write_text(RESET_PEAK)
    except OSError:
        return False
    return True


@contextmanager
def peak_memory() -> Iterator[Meter]:
    """Measure the peak resident memory of the ``with`` block (``meter.peak_gb`` after it)."""
    meter = Meter()
    before = high_water_bytes()
    measurable = before is not None and reset_high_water()
    if measurable and _open:
        _open[-1].reached_bytes = max(_open[-1].reached_bytes, before)
    _open.append(meter)
    try:
        yield meter
    finally:
        _open.pop()
        peak = high_water_bytes() if measurable else None
        if peak is not None:
            peak = max(peak, meter.reached_bytes)
            meter.peak_gb = peak / GB
            if _open:
                _open[-1].reached_bytes = max(_open[-1].reached_bytes, peak)


@contextmanager
def freed_memory_returned() -> Iterator[bool]:
    """Within it, glibc hands every freed block of 4 MiB or more back to the system; yields
    whether it does.

    glibc keeps a freed large block (a tensor) in its own heap once the size it hands back
    has risen past it (it rises with every large block freed, up to 32 MiB), so the
    activations a training step frees stay resident as a heap the next allocations only
    partly reuse. In a two-step run of the default training this held the peak at 3.6 GB
    against 2.6 GB with a fixed 4 MiB threshold, which costs about 13% more time in mapping
    fresh pages; the other stages peak well below either and run faster without it, so it
    is set for training alone, and afterwards the threshold is glibc's own ceiling, 32 MiB.
    Nothing is changed where the C library is not glibc, or where the user set
    ``MALLOC_MMAP_THRESHOLD_`` (theirs is kept).
    """
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        yield False
        return
    libc.mallopt(M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD_BYTES)
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX_BYTES)


def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
