"""``cortexlink bench dsp --cores``: core counts, the sweep, and the per-core-count result."""

import os

import pytest

from cortexlink.bench import dsp
from cortexlink.core.errors import ConfigError


def test_core_counts_are_checked_sorted_and_include_the_one_core_baseline():
    assert dsp.check_cores(None) == []
    assert dsp.check_cores([4, "2"]) == [1, 2, 4]
    assert dsp.check_cores(["all"]) == sorted({1, os.cpu_count() or 1})
    for bad in ([0], ["-1"], ["two"], [1.5], [True]):
        with pytest.raises(ConfigError, match="cores must be positive integers or 'all'"):
            dsp.check_cores(bad)


def test_the_sweep_doubles_up_to_every_core():
    assert dsp.sweep_cores(1) == [1]
    assert dsp.sweep_cores(2) == [1, 2]
    assert dsp.sweep_cores(12) == [1, 2, 4, 8, 12]
    assert dsp.sweep_cores(16) == [1, 2, 4, 8, 16]


def test_cores_run_reports_speedup_and_identical_output():
    res = dsp.run(channels=[300], seconds=0.6, peers=["cortexlink"], progress=False, cores=[2])
    by_k = res["cores"]["300"]
    assert res["core_counts"] == [1, 2] and set(by_k) == {"1", "2"}
    one, two = by_k["1"], by_k["2"]
    assert "error" not in two, two
    assert two["n_parts"] == 2 and one["n_parts"] == 1
    assert two["identical_to_1_core"] is True          # same feature bytes and events as one core
    assert two["speedup"] == pytest.approx(two["realtime_channels"] / one["realtime_channels"])
    assert one["realtime_channels_steady"] > 0 and two["step_ms"]["p99"] > 0
