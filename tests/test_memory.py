"""Peak resident memory per stage: each stage's own peak, nested stages included."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from spin.memory import freed_memory_returned, high_water_bytes, peak_memory, reset_high_water

pytestmark = pytest.mark.skipif(
    high_water_bytes() is None or not reset_high_water(),
    reason="the kernel offers no resettable peak resident memory here",
)

MB = 1e6


def touch(megabytes: int) -> np.ndarray:
    """An array whose pages are all resident."""
    return np.ones(int(megabytes * MB), dtype=np.uint8)


def test_a_stage_after_a_large_one_reports_its_own_smaller_peak() -> None:
    with peak_memory() as large:
        block = touch(400)
        del block
    with peak_memory() as small:
        block = touch(20)
        del block
    assert large.peak_gb is not None and small.peak_gb is not None
    assert large.peak_gb - small.peak_gb > 0.3


def test_an_outer_stage_keeps_the_peak_of_a_stage_inside_it() -> None:
    with peak_memory() as outer:
        block = touch(300)  # reached before the inner stage resets the peak
        del block
        with peak_memory() as inner:
            small = touch(10)
            del small
    assert outer.peak_gb is not None and inner.peak_gb is not None
    assert outer.peak_gb - inner.peak_gb > 0.25


def test_a_users_own_malloc_threshold_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    with freed_memory_returned() as changed:
        assert not changed
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    with freed_memory_returned() as changed:
        assert changed == (platform.libc_ver()[0] == "glibc")
