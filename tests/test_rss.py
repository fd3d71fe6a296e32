"""Per-phase peak RSS (``resrank_jax.rss``) and giving freed heap back."""

import gc
import sys

import numpy as np
import pytest

from resrank_jax.rss import PhasePeaks, current_rss_gb, release_freed_memory

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")

GB = 1e9


def touched(n_bytes: int) -> np.ndarray:
    """``n_bytes`` that are resident (written), not only reserved."""
    return np.ones(n_bytes, np.uint8)


def test_each_phase_reports_its_own_peak_not_the_process_peak_so_far():
    phases = PhasePeaks()
    phases.start()
    with phases.phase("big"):
        block = touched(int(0.4 * GB))
        del block
    with phases.phase("small"):
        pass
    assert phases.peaks_gb["big"] - phases.peaks_gb["small"] > 0.35


def test_an_inner_phase_peak_counts_toward_the_outer_phase():
    phases = PhasePeaks()
    phases.start()
    with phases.phase("outer"):
        with phases.phase("inner"):
            block = touched(int(0.4 * GB))
            del block
        with phases.phase("after"):
            pass
    assert phases.peaks_gb["outer"] >= phases.peaks_gb["inner"]
    assert phases.peaks_gb["inner"] - phases.peaks_gb["after"] > 0.35


def test_phases_record_nothing_until_started():
    phases = PhasePeaks()
    with phases.phase("a"):
        pass
    assert phases.peaks_gb == {}


def test_release_gives_freed_small_allocations_back():
    """Many chunks below glibc's mmap threshold stay in the heap once freed; released, the
    process's RSS falls by about their size."""
    chunks = [bytearray(64 * 1024) for _ in range(6000)]  # 393 MB of heap chunks, zeroed
    del chunks[:-1]  # keep the top chunk, so the heap cannot shrink by itself from the end
    gc.collect()
    held = current_rss_gb()
    release_freed_memory()
    assert held - current_rss_gb() > 0.3
