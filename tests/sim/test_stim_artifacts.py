"""Stimulation artefacts of the simulated implant (cortexlink.sim.stim_artifacts)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, empty_pulses
from cortexlink.dsp import FeatureExtractor
from cortexlink.sim import ImplantConfig, SimulatedImplant

FS = 30000.0
GAIN = 0.195


def _pulses(electrode, time_s, amplitude_ua=60.0, width_us=200.0, gap_us=50.0, cathodic_first=True):
    e, t, a = np.broadcast_arrays(np.asarray(electrode), np.asarray(time_s, float), np.asarray(amplitude_ua, float))
    p = empty_pulses(e.size)
    p["electrode"] = e.ravel()
    p["time_s"] = t.ravel()
    p["amplitude_ua"] = p["amplitude2_ua"] = a.ravel()
    p["width_us"] = p["width2_us"] = width_us
    p["gap_us"] = gap_us
    p["cathodic_first"] = cathodic_first
    return p


def _implant(**kw):
    kw = {"n_channels": 16, "seed": 3, "n_dead": 1, "n_saturating": 0, "artifact_rate_hz": 0.0, **kw}
    return SimulatedImplant(**kw)


def _read_all(imp, sizes):
    return np.concatenate([imp.read(s).data for s in sizes])


def _train():
    return _pulses([5] * 20 + [9] * 20, np.r_[np.arange(20) * 0.005 + 0.0101, np.arange(20) * 0.005 + 0.0126])


def test_output_does_not_depend_on_read_chunk_sizes():
    p = _train()
    a, b = _implant(), _implant()
    a.stimulate(p)
    b.stimulate(p)
    n = 4000
    x = _read_all(a, [n])
    sizes = [1, 7, 1000, 3, 299]
    sizes += [n - sum(sizes)]
    y = _read_all(b, sizes)
    np.testing.assert_array_equal(x, y)
    plain = _read_all(_implant(), [n])
    assert np.abs(x.astype(int) - plain).max() > 1000      # the artefact is really there


def test_pulses_given_while_reading_equal_pulses_given_up_front():
    p = _train()
    a, b = _implant(), _implant()
    a.stimulate(p)
    x = _read_all(a, [4000])
    parts = [b.read(250).data]                       # before the first pulse (sample 303)
    b.stimulate(p[p["time_s"] < 0.05])
    parts.append(b.read(1000).data)                  # up to sample 1250, before the next pulse given
    b.stimulate(p[p["time_s"] >= 0.05])
    parts.append(b.read(2750).data)
    np.testing.assert_array_equal(x, np.concatenate(parts))


def test_pulse_partly_in_the_past_renders_its_remaining_part_and_late_pulses_are_counted():
    p = _pulses(5, 0.0101)                           # onset at sample 303
    a, b = _implant(), _implant()
    a.stimulate(p)
    x = _read_all(a, [3000])
    head = b.read(310).data                          # past the onset, inside the pulse
    assert b.stimulate(p) == 1
    tail = b.read(2690).data
    np.testing.assert_array_equal(tail, x[310:])     # the rest of the artefact, sample for sample
    np.testing.assert_array_equal(head, _read_all(_implant(), [310]))
    assert b.n_late_pulses == 0 and len(b.stimulation_log) == 1
    # wholly in the past (artefact incl. its recovery tail over): counted late, not rendered, not logged
    before = b.read(1).data
    assert b.stimulate(_pulses(5, 0.0101)) == 0
    assert b.n_late_pulses == 1 and len(b.stimulation_log) == 1
    c = _implant()
    c.stimulate(p)
    ref = _read_all(c, [3002])
    np.testing.assert_array_equal(np.concatenate([before, b.read(1).data]), ref[3000:3002])


def test_stimulation_log_sorted_read_only_and_cleared_by_reset():
    imp = _implant()
    imp.stimulate(_pulses([3, 4], [0.02, 0.01]))
    imp.stimulate(_pulses(2, 0.015))
    log = imp.stimulation_log
    assert log.dtype == PULSE_DTYPE
    np.testing.assert_array_equal(log["time_s"], [0.01, 0.015, 0.02])
    np.testing.assert_array_equal(log["electrode"], [4, 2, 3])
    with pytest.raises(ValueError):
        log["time_s"][0] = 1.0
    imp.reset()
    assert len(imp.stimulation_log) == 0 and imp.n_late_pulses == 0
    # after reset the pending pulses are gone too: the output is the plain one
    np.testing.assert_array_equal(imp.read(1500).data, _read_all(_implant(), [1500]))


def _artefact(pulses, n=3000, **kw):
    imp = _implant(**kw)
    imp.stimulate(pulses)
    x = _read_all(imp, [n]).astype(float)
    plain = _read_all(_implant(**kw), [n]).astype(float)
    return (x - plain) * GAIN, x, imp


def test_artefact_phases_scale_with_amplitude_and_fall_off_with_distance():
    k0 = 303
    a10, _, imp = _artefact(_pulses(5, 0.0101, 10.0))
    a20, _, _ = _artefact(_pulses(5, 0.0101, 20.0))
    cfg = imp.config
    d = np.linalg.norm(imp.channel_map.positions_um - imp.channel_map.positions_um[5], axis=1)
    live = np.setdiff1d(np.arange(16), imp.ground_truth().dead_channels)
    ph1 = a10[k0 + 2, live]                  # inside the first (cathodic) phase: negative
    assert np.all(ph1 < 0)
    ph2 = a10[k0 + 6 + 2 + 2, live]          # inside the second phase: positive
    assert np.all(ph2 > 0)
    # proportional to the amplitude (int16 rounding: 1 count)
    np.testing.assert_allclose(a20[k0 + 2, live], 2 * ph1, atol=3 * GAIN)
    # the stimulating channel sees about stim_artifact_uv_per_ua per µA; far channels less
    assert abs(ph1[live == 5][0]) == pytest.approx(10 * cfg.stim_artifact_uv_per_ua, rel=0.8)
    far = live[np.argsort(d[live])[-3:]]
    near = live[np.argsort(d[live])[1:4]]
    assert np.median(np.abs(a10[k0 + 2, far])) < 0.75 * np.median(np.abs(a10[k0 + 2, near]))
    # without the per-channel spread the falloff is exactly r0 / (r0 + d)
    flat, _, _ = _artefact(_pulses(5, 0.0101, 10.0), stim_spread=0.0)
    r0 = cfg.stim_falloff_um
    np.testing.assert_allclose(flat[k0 + 2, live], -10 * cfg.stim_artifact_uv_per_ua * r0 / (r0 + d[live]),
                               atol=GAIN)
    # per-channel spread: channels at the same distance see different artefacts (seeded)
    same = live[np.isclose(d[live], d[near[0]])]
    assert same.size >= 2 and np.ptp(a10[k0 + 2, same]) > 5 * GAIN
    # dead channels see nothing
    dead = imp.ground_truth().dead_channels
    assert np.all(a10[:, dead] == 0)


def test_saturated_channel_sits_at_the_rail_then_recovers_exponentially():
    k0 = 303
    art, x, imp = _artefact(_pulses(5, 0.0101, 80.0))    # 80 µA * ~100 µV/µA: past 5 mV
    n_pulse = 6 + 2 + 6
    dead_n = int(round(imp.config.stim_dead_time_ms * 1e-3 * FS))
    assert np.all(x[k0:k0 + 6, 5] == -32768)                    # cathodic phase: lower rail
    assert np.all(x[k0 + 6:k0 + n_pulse + dead_n, 5] == 32767)  # gap, anodic phase, dead time: upper rail
    tail = art[k0 + n_pulse + dead_n + 5:k0 + n_pulse + dead_n + 200, 5]
    assert tail[0] > 1000                                        # still far from baseline ...
    assert np.all(np.abs(tail[150:]) < 30)                      # ... settled after ~5 ms
    # the decay is exponential with tau near stim_recovery_tau_ms (per-channel spread)
    seg = tail[5:40]
    tau_samples = -1.0 / np.polyfit(np.arange(seg.size), np.log(np.maximum(seg, 1e-3)), 1)[0]
    tau_ms = tau_samples / FS * 1e3
    assert 0.5 * imp.config.stim_recovery_tau_ms < tau_ms < 2.0 * imp.config.stim_recovery_tau_ms


def test_recovery_time_constants_differ_between_channels_and_follow_the_config():
    a = _implant()
    b = _implant(stim_recovery_tau_ms=1.5)
    ta, tb = a._stim_tau_samples, b._stim_tau_samples
    assert np.ptp(ta) > 0
    np.testing.assert_allclose(tb / ta, 3.0)
    np.testing.assert_allclose(np.median(ta) / FS * 1e3, 0.5, rtol=0.2)
    c = _implant(seed=4)
    assert not np.allclose(c._stim_tau_samples, ta)


def test_artefacts_make_the_feature_extractor_cross_threshold():
    n_cal, n = 30000, 60000
    p = _pulses(np.repeat([5, 10], 30), np.tile(1.0 + 0.005 + np.arange(30) * 0.01, 2))
    plain = _read_all(_implant(), [n])
    imp = _implant()
    imp.stimulate(p)
    stim = _read_all(imp, [n])
    fx = FeatureExtractor(imp.channel_map, FS, keep_events=True, backend="numpy")
    fx.calibrate(plain[:n_cal])
    fx.apply(plain)
    ev0 = fx.events_
    fx.apply(stim)
    ev1 = fx.events_
    n0 = int((ev0.sample_idx >= n_cal).sum())
    n1 = int((ev1.sample_idx >= n_cal).sum())
    assert n1 > n0 + 10 * 30                           # >= 10 extra crossings per pulse time
    # the extra crossings sit right after the pulses
    onsets = np.round(p["time_s"] * FS).astype(int)
    extra = ev1.sample_idx[ev1.sample_idx >= n_cal]
    lag = extra[:, None] - onsets[None, :]
    near_pulse = ((lag >= 0) & (lag < 300)).any(1)
    assert near_pulse.sum() > 0.8 * (n1 - n0)


@pytest.mark.parametrize("field, value", [("electrode", 16), ("electrode", -1), ("time_s", np.nan),
                                          ("time_s", -0.1), ("amplitude_ua", -1.0), ("width_us", 0.0),
                                          ("gap_us", -5.0), ("amplitude2_ua", np.inf)])
def test_bad_pulses_raise_and_deliver_nothing(field, value):
    imp = _implant()
    p = _pulses([1, 2], [0.01, 0.02])
    p[field][1] = value
    with pytest.raises(ValidationError, match=f"pulses: {field} must be"):
        imp.stimulate(p)
    assert len(imp.stimulation_log) == 0


def test_not_a_pulse_array_raises():
    imp = _implant()
    with pytest.raises(ValidationError, match="pulses must be a structured array"):
        imp.stimulate(np.zeros(3))
    assert imp.stimulate(empty_pulses(0)) == 0


@pytest.mark.parametrize("field, value, msg", [
    ("stim_artifact_uv_per_ua", -1.0, r"stim_artifact_uv_per_ua must be in \[0.0, 10000.0\]"),
    ("stim_falloff_um", 0.0, r"stim_falloff_um must be in"),
    ("stim_saturation_uv", "big", r"stim_saturation_uv must be a finite number"),
    ("stim_dead_time_ms", 11.0, r"stim_dead_time_ms must be in"),
    ("stim_recovery_tau_ms", 0.0, r"stim_recovery_tau_ms must be in"),
    ("stim_residual_fraction", 1.5, r"stim_residual_fraction must be in"),
    ("stim_spread", np.nan, r"stim_spread must be a finite number"),
])
def test_bad_stim_config_raises(field, value, msg):
    with pytest.raises(ConfigError, match=msg):
        ImplantConfig(**{field: value})


def test_zero_artefact_gain_leaves_the_signal_untouched():
    imp = _implant(stim_artifact_uv_per_ua=0.0)
    imp.stimulate(_train())
    np.testing.assert_array_equal(imp.read(3000).data, _read_all(_implant(stim_artifact_uv_per_ua=0.0), [3000]))
    assert len(imp.stimulation_log) == 40
