"""measure_artifacts (the measurement behind ``bench stim``): small runs, robust ratios."""

from __future__ import annotations

import pytest

from cortexlink.bench.stim_artifacts import MODES, measure_artifacts
from cortexlink.core.errors import ConfigError

SMALL = dict(n_channels=32, duration_s=2.0, calibration_s=1.0, seed=0)


@pytest.fixture(scope="module")
def one_electrode():
    return measure_artifacts(n_electrodes=1, **SMALL)


@pytest.fixture(scope="module")
def three_electrodes():
    return measure_artifacts(n_electrodes=3, modes=("none", "blank", "blank+template"), **SMALL)


def test_stimulation_without_removal_floods_the_detector_with_false_crossings(one_electrode):
    r = one_electrode
    base = r["baseline"]["false_crossings_per_s"]
    none = r["modes"]["none"]["false_crossings_per_s"]
    assert none > 50.0                     # 100 pulses/s: most pulses cross on most channels
    assert none > 30 * max(base, 0.5)
    assert r["modes"]["none"]["blanked_fraction"] == 0.0
    assert r["modes"]["none"]["true_spikes_lost_fraction"] == 0.0
    assert set(r["modes"]) == set(MODES) and r["n_pulses"] == 199


def test_blanking_brings_false_crossings_down_and_loses_the_blanked_share_of_spikes(one_electrode):
    r = one_electrode["modes"]
    none, blank = r["none"], r["blank"]
    assert blank["false_crossings_per_s"] * 5 <= none["false_crossings_per_s"]
    # 0.1 ms + 0.45 ms pulse + 1.5 ms per 10 ms: ~20 % blanked, and about that share of spikes lost
    assert 0.15 < blank["blanked_fraction"] < 0.25
    assert blank["true_spikes_lost_fraction"] == pytest.approx(blank["blanked_fraction"], abs=0.05)
    assert blank["spikes_detected_fraction"] < one_electrode["baseline"]["spikes_detected_fraction"]
    assert r["template"]["blanked_fraction"] == 0.0 and r["template"]["true_spikes_lost_fraction"] == 0.0


def test_template_after_blanking_removes_the_saturated_channels_recovery(three_electrodes):
    # three electrodes at once saturate their channels; the recovery tails outlast the 1.5 ms
    # blank and the common-average reference spreads them: blanking alone is not enough
    r = three_electrodes["modes"]
    assert r["blank+template"]["false_crossings_per_s"] * 20 <= r["none"]["false_crossings_per_s"]
    assert r["blank+template"]["false_crossings_per_s"] * 5 <= r["blank"]["false_crossings_per_s"]
    assert r["blank+template"]["blanked_fraction"] == r["blank"]["blanked_fraction"]


@pytest.mark.parametrize("kw, msg", [(dict(modes=("none", "median")), "modes must be drawn from"),
                                     (dict(n_channels=4), r"n_channels must be >= 8"),
                                     (dict(duration_s=0.0), r"duration_s must be in"),
                                     (dict(rate_hz=-1.0), r"rate_hz must be in")])
def test_bad_arguments_raise(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        measure_artifacts(**kw)
