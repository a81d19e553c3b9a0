"""The share-of-peak arithmetic: the clock sampled during a run replaces the one read at start."""

from __future__ import annotations

import pytest

from ops.bench.peak import ClockSampler, CpuPeak, current_clock_ghz


def test_peak_uses_the_clock_measured_during_the_run() -> None:
    peak = CpuPeak("test CPU", 2, 2.0, {"fp32": 32, "int8": 64}, "test")
    assert peak.peak_ops_per_s("fp32") == pytest.approx(2 * 2.0e9 * 32)
    assert peak.peak_ops_per_s("int8", clock_ghz=3.0) == pytest.approx(2 * 3.0e9 * 64)
    assert peak.peak_ops_per_s("bf16") is None  # no BF16 instructions: no peak to share


def test_the_sampler_reads_the_clock_while_its_block_runs() -> None:
    if current_clock_ghz() is None:
        pytest.skip("no cpu MHz in /proc/cpuinfo on this machine")
    with ClockSampler(interval_s=0.01) as clock:
        sum(range(200_000))
    assert clock.mean_ghz is not None and 0.1 < clock.mean_ghz < 10
