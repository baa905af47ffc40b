"""Tests of the simulated implant (cortexlink.sim)."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.signal as ss

from cortexlink import ChannelMap, Chunk, ConfigError, ValidationError
from cortexlink.sim import PRESETS, ImplantConfig, SimulatedImplant

FS = 30000.0
# A small, fast implant exercising every signal component (frequent artefacts included).
SMALL = dict(n_channels=24, seed=7, artifact_rate_hz=40.0, n_dead=1, n_saturating=1, unit_loss_per_min=5.0)


def _read_in_chunks(imp, total, size):
    parts, got = [], 0
    while got < total:
        n = min(size, total - got) if isinstance(size, int) else min(size[len(parts) % len(size)], total - got)
        parts.append(imp.read(n).data)
        got += n
    return np.concatenate(parts)


def _clean(**kw):
    """Only units and background noise: no LFP, line, artefacts, faulty channels, drift."""
    base = dict(lfp_uv=0.0, line_noise_hz=None, artifact_rate_hz=0.0, n_dead=0, n_saturating=0, drift=0.0)
    base.update(kw)
    return base


# ---------------------------------------------------------------- determinism
def test_chunk_size_invariance():
    total = 6000  # 0.2 s
    whole = SimulatedImplant(**SMALL).read(total).data
    for size in (1, 7, 30, 1000, (13, 1, 299, 301, 2)):
        imp = SimulatedImplant(**SMALL)
        got = _read_in_chunks(imp, total, size)
        assert np.array_equal(got, whole), f"chunk size {size} changed the samples"
    # the ground truth does not depend on chunking either
    a, b = SimulatedImplant(**SMALL), SimulatedImplant(**SMALL)
    a.read(total)
    _read_in_chunks(b, total, 7)
    ga, gb = a.ground_truth(), b.ground_truth()
    assert len(ga.spike_samples) > 20 and len(ga.artifact_samples) > 0
    assert np.all(np.diff(ga.artifact_samples) >= 0)
    assert np.array_equal(ga.spike_samples, gb.spike_samples)
    assert np.array_equal(ga.spike_units, gb.spike_units)


def test_same_seed_same_output_different_seed_differs_and_reset_replays():
    a = SimulatedImplant(**SMALL).read(3000).data
    b = SimulatedImplant(**SMALL).read(3000).data
    c = SimulatedImplant(**{**SMALL, "seed": 8}).read(3000).data
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.mean(a == c) < 0.2
    imp = SimulatedImplant(**SMALL)
    first = imp.read(3000).data.copy()
    n_spk = len(imp.ground_truth().spike_samples)
    imp.set_intent(velocity=(1.0, 0.0))
    imp.read(500)
    imp.reset()
    assert imp.sample_index == 0 and len(imp.ground_truth().spike_samples) == 0
    chunk = imp.read(3000)
    assert chunk.seq == 0 and chunk.start_sample == 0
    assert np.array_equal(chunk.data, first)
    assert len(imp.ground_truth().spike_samples) == n_spk


def test_block_size_is_configurable_and_output_depends_only_on_it():
    a = SimulatedImplant(**SMALL, block_size=64)
    assert a.block_size == 64
    whole = a.read(2000).data
    b = SimulatedImplant(**SMALL, block_size=64)
    assert np.array_equal(_read_in_chunks(b, 2000, 33), whole)


# ---------------------------------------------------------------- chunks and map
def test_chunk_fields():
    imp = SimulatedImplant(**SMALL)
    chunks = [imp.read(n) for n in (1, 30, 451)]
    starts = [c.start_sample for c in chunks]
    assert starts == [0, 1, 31]
    assert [c.seq for c in chunks] == [0, 1, 2]
    for c, n in zip(chunks, (1, 30, 451)):
        assert isinstance(c, Chunk)
        assert c.data.dtype == np.int16 and c.data.shape == (n, 24)
        assert c.fs_hz == FS and not c.data.flags.writeable
    assert chunks[0].host_time_ns <= chunks[1].host_time_ns <= chunks[2].host_time_ns
    assert imp.sample_index == 482
    s = imp.read_seconds(0.01)
    assert s.n_samples == 300 and s.start_sample == 482


def test_channel_map_and_faulty_channels_not_marked_bad():
    imp = SimulatedImplant(**SMALL)
    cm = imp.channel_map
    assert isinstance(cm, ChannelMap) and cm.n_channels == 24
    assert np.allclose(cm.gain_uv, 0.195)
    assert not cm.bad.any()
    gt = imp.ground_truth()
    assert len(gt.dead_channels) == 1 and len(gt.saturating_channels) == 1
    assert 32767 * cm.gain_uv[0] == pytest.approx(6389.6, abs=1)


def test_dead_channels_flat_and_saturating_hit_rails():
    imp = SimulatedImplant(n_channels=32, seed=3, n_dead=3, n_saturating=2)
    x = imp.read_seconds(0.5).data
    gt = imp.ground_truth()
    for ch in gt.dead_channels:
        assert np.abs(x[:, ch]).max() <= 10 and x[:, ch].std() < 3
    for ch in gt.saturating_channels:
        at_rail = np.mean((x[:, ch] == 32767) | (x[:, ch] == -32768))
        assert at_rail > 0.2
    good = np.setdiff1d(np.arange(32), np.r_[gt.dead_channels, gt.saturating_channels])
    assert np.all(x[:, good].std(0) > 20)  # > ~4 µV
    assert not np.any(np.isin(gt.unit_channel, np.r_[gt.dead_channels, gt.saturating_channels]))


def test_4096_channels_short_read():
    imp = SimulatedImplant(n_channels=4096, seed=1)
    c = imp.read(300)
    assert c.data.shape == (300, 4096) and c.data.dtype == np.int16
    assert c.data[:, 0].std() > 0


# ---------------------------------------------------------------- noise, units, SNR
def test_background_noise_rms_matches_the_analytic_snr_denominator():
    imp = SimulatedImplant(**_clean(n_channels=16, seed=4, units_per_channel_p=(1.0,)))
    x = imp.channel_map.to_uv(imp.read_seconds(2.0).data).astype(np.float64)
    gt = imp.ground_truth()
    X = np.fft.rfft(x, axis=0)
    f = np.fft.rfftfreq(len(x), 1 / FS)
    X[(f < 250) | (f > 5000)] = 0
    band_rms = np.fft.irfft(X, n=len(x), axis=0).std(0)
    np.testing.assert_allclose(band_rms, gt.channel_noise_uv, rtol=0.06)
    assert 4.0 < np.median(gt.channel_noise_uv) < 10.0


def test_snr_spread_and_definition():
    imp = SimulatedImplant(seed=0)  # default preset, 1024 channels (static only, no read)
    gt = imp.ground_truth()
    assert gt.n_units > 1000
    assert gt.unit_snr.min() < 3 and gt.unit_snr.max() > 15
    np.testing.assert_allclose(gt.unit_snr_raw, gt.unit_amplitude_uv / gt.channel_noise_uv[gt.unit_channel])
    # unit_snr is measured on the band-passed template (zero-phase 250-5000 Hz), a little below raw
    from scipy.signal import butter, sosfiltfilt
    sos = butter(2, (250, 5000), btype="bandpass", fs=gt.fs_hz, output="sos")
    pad = np.zeros((gt.unit_templates_uv.shape[0], 300))
    filt = sosfiltfilt(sos, np.concatenate([pad, gt.unit_templates_uv, pad], 1), axis=1)
    np.testing.assert_allclose(gt.unit_snr, -filt.min(1) / gt.channel_noise_uv[gt.unit_channel], rtol=1e-4)
    ratio = gt.unit_snr / gt.unit_snr_raw
    assert np.median(ratio) < 0.97 and ratio.min() > 0.6 and ratio.max() < 1.2
    tr = gt.template_trough_idx
    np.testing.assert_allclose(gt.unit_templates_uv[:, tr], -gt.unit_amplitude_uv, rtol=1e-5)
    assert np.all(np.argmin(gt.unit_templates_uv, axis=1) == tr)
    # biphasic: a positive repolarisation lobe after the trough, smaller than the trough
    post = gt.unit_templates_uv[:, tr:].max(1) / gt.unit_amplitude_uv
    assert np.all(post > 0.05) and np.all(post < 1.0)
    counts = np.bincount(gt.unit_channel, minlength=1024)
    assert counts.max() <= 3 and np.mean(counts == 0) > 0.1
    # distinct waveforms on a channel
    ch = int(np.argmax(counts))
    w = gt.unit_templates_uv[gt.unit_channel == ch]
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    assert np.all((w @ w.T)[np.triu_indices(len(w), 1)] < 0.999)


def test_spikes_visible_at_ground_truth_trough():
    imp = SimulatedImplant(**_clean(n_channels=16, seed=5, units_per_channel_p=(0.0, 1.0),
                                    snr_range=(15.0, 25.0), mua_fraction=0.1))
    x = imp.channel_map.to_uv(imp.read_seconds(1.0).data).astype(np.float64)
    gt = imp.ground_truth()
    sos = ss.butter(3, [300, 6000], btype="band", fs=FS, output="sos")
    y = ss.sosfiltfilt(sos, x, axis=0)
    sel = (gt.spike_samples > 50) & (gt.spike_samples < len(x) - 50)
    t, ch = gt.spike_samples[sel], gt.spike_channels[sel]
    assert len(t) > 100
    win = np.arange(-5, 6)
    snippets = y[t[:, None] + win[None, :], ch[:, None]]
    offsets = win[np.argmin(snippets, axis=1)]
    assert np.mean(np.abs(offsets) <= 1) > 0.9
    # the raw signal also dips at the truth sample by about the unit's amplitude
    dip = x[t, ch] - x[t - 20, ch]
    amp = gt.unit_amplitude_uv[gt.spike_units[sel]]
    assert np.median(-dip / amp) > 0.7


# ---------------------------------------------------------------- firing
def test_spike_count_consistent_with_rates_and_refractory():
    imp = SimulatedImplant(**_clean(n_channels=32, seed=6, baseline_hz_range=(20.0, 150.0)))
    imp.set_intent(velocity=(0.0, 0.0), click=0.0)
    rates = imp.expected_rates_hz((0.0, 0.0), 0.0)
    np.testing.assert_allclose(rates, imp.ground_truth().unit_baseline_hz)
    duration = 2.0
    imp.read_seconds(duration)
    gt = imp.ground_truth()
    tau = gt.unit_refractory_ms * 1e-3
    expected = rates / (1 + rates * tau) * duration
    counts = np.bincount(gt.spike_units, minlength=gt.n_units)
    assert abs(counts.sum() - expected.sum()) < 5 * np.sqrt(expected.sum())
    assert np.corrcoef(counts, expected)[0, 1] > 0.95
    for u in range(gt.n_units):
        s = gt.unit_spike_samples(u)
        assert np.all(np.diff(s) >= np.floor(gt.unit_refractory_ms[u] * 1e-3 * FS))
    assert np.all(np.diff(gt.spike_samples) >= 0)


def test_cosine_tuning_preferred_vs_opposite():
    imp = SimulatedImplant(**_clean(n_channels=32, seed=9))
    imp.set_intent(velocity=(1.0, 0.0))
    imp.read_seconds(1.0)
    imp.set_intent(velocity=(-1.0, 0.0))
    imp.read_seconds(1.0)
    gt = imp.ground_truth()
    n = int(FS)
    first = np.bincount(gt.spike_units[gt.spike_samples < n], minlength=gt.n_units)
    second = np.bincount(gt.spike_units[gt.spike_samples >= n], minlength=gt.n_units)
    pdx = gt.unit_preferred_direction[:, 0]
    right, left = pdx > 0.5, pdx < -0.5
    assert right.sum() > 5 and left.sum() > 5
    assert first[right].sum() > 1.5 * second[right].sum()
    assert second[left].sum() > 1.5 * first[left].sum()
    assert np.corrcoef(first - second, pdx * gt.unit_depth_hz)[0, 1] > 0.7
    np.testing.assert_allclose(np.linalg.norm(gt.unit_preferred_direction, axis=1), 1.0)


def test_set_intent_click_and_timing():
    imp = SimulatedImplant(**_clean(n_channels=32, seed=10, click_fraction=0.5))
    imp.read(450)  # generated blocks 0 and 1 (samples 0-599)
    imp.set_intent(velocity=(0.2, -0.1), click=1.0)
    imp.read_seconds(1.0)
    gt = imp.ground_truth()
    assert list(gt.intent_samples[:3]) == [0, 300, 600]
    assert tuple(gt.intent_velocity[2]) == (0.2, -0.1) and gt.intent_click[2] == 1.0
    assert gt.intent_click[1] != 1.0 or tuple(gt.intent_velocity[1]) != (0.2, -0.1)
    v, c = gt.intent_at([599, 600])
    assert c[1] == 1.0 and tuple(v[1]) == (0.2, -0.1)
    tuned = gt.unit_click_tuned
    assert tuned.sum() > 5 and np.all(gt.unit_click_depth_hz[~tuned] == 0)
    on = np.bincount(gt.spike_units[gt.spike_samples >= 600], minlength=gt.n_units)
    imp.clear_intent()
    imp.set_intent(velocity=(0.2, -0.1), click=0.0)
    start = imp.n_generated
    imp.read_seconds(1.0)
    gt = imp.ground_truth()
    late = gt.spike_samples >= start
    off = np.bincount(gt.spike_units[late], minlength=gt.n_units)
    assert on[tuned].sum() > 1.5 * off[tuned].sum()
    assert abs(on[~tuned].sum() - off[~tuned].sum()) < 0.2 * off[~tuned].sum()


def test_intent_fn_schedule_is_used_and_logged():
    def schedule(sample_idx):
        return (1.0, 0.0, 0.0) if sample_idx < 3000 else (0.0, -1.0, 1.0)

    imp = SimulatedImplant(n_channels=8, seed=1, intent_fn=schedule)
    imp.read(6000)
    gt = imp.ground_truth()
    expect = np.array([schedule(s) for s in gt.intent_samples])
    np.testing.assert_array_equal(gt.intent_velocity, expect[:, :2])
    np.testing.assert_array_equal(gt.intent_click, expect[:, 2])


def test_builtin_intent_is_smooth_random_and_seeded():
    imp = SimulatedImplant(n_channels=4, seed=2, n_dead=0, n_saturating=0, click_rate_hz=1.0)
    imp.read_seconds(20.0)
    gt = imp.ground_truth()
    v = gt.intent_velocity
    speed_rms = np.sqrt(np.mean(np.sum(v ** 2, axis=1)))
    assert 0.4 < speed_rms < 1.5
    assert np.mean(np.abs(np.diff(v, axis=0))) < 0.1 * np.std(v)  # smooth at block scale
    assert 0 < np.mean(gt.intent_click) < 0.5
    other = SimulatedImplant(n_channels=4, seed=3, n_dead=0, n_saturating=0)
    other.read(3000)
    assert not np.array_equal(other.ground_truth().intent_velocity, v[:10])


def test_unit_loss_and_drift():
    imp = SimulatedImplant(**_clean(n_channels=32, seed=11, unit_loss_per_min=30.0, drift=0.5, drift_tau_s=1.0))
    imp.set_intent((0.0, 0.0))
    before = imp.expected_rates_hz()
    imp.read_seconds(2.0)
    gt = imp.ground_truth()
    lost = gt.unit_lost_sample >= 0
    assert 0 < lost.sum() < gt.n_units
    for u in np.flatnonzero(lost):
        assert np.all(gt.unit_spike_samples(u) < gt.unit_lost_sample[u] + gt.template_trough_idx)
    after = imp.expected_rates_hz()
    assert np.all(after[lost] == 0)
    ratio = after[~lost] / before[~lost]
    assert np.std(np.log(ratio)) > 0.1  # baselines drifted
    stable = SimulatedImplant(**_clean(n_channels=8, seed=11))
    stable.read_seconds(0.5)
    assert np.all(stable.ground_truth().unit_lost_sample == -1)


def test_ground_truth_until_sample():
    imp = SimulatedImplant(**SMALL)
    imp.read(1000)
    gt = imp.ground_truth()
    assert gt.n_samples == 1000 and np.all(gt.spike_samples < 1000)
    assert np.all(gt.intent_samples < 1000)
    early = imp.ground_truth(until_sample=500)
    assert np.all(early.spike_samples < 500)
    assert np.array_equal(early.spike_samples, gt.spike_samples[gt.spike_samples < 500])
    with pytest.raises(ValidationError, match="until_sample must be in"):
        imp.ground_truth(until_sample=imp.n_generated + 1)


# ---------------------------------------------------------------- config and presets
def test_presets():
    assert {"default", "utah96"} <= set(PRESETS)
    assert PRESETS["default"].n_channels == 1024
    utah = SimulatedImplant.from_preset("utah96", seed=1)
    gt = utah.ground_truth()
    assert utah.n_channels == 96
    counts = np.bincount(gt.unit_channel, minlength=96)
    assert np.mean(counts == 1) > 0.5
    assert utah.read(30).data.shape == (30, 96)
    tiny = SimulatedImplant.from_preset("tiny", n_channels=20)
    assert tiny.n_channels == 20 and tiny.config.seed == 0
    cfg = ImplantConfig(n_channels=10)
    assert SimulatedImplant(cfg).n_channels == 10
    assert cfg.replace(seed=5).seed == 5 and cfg.seed == 0


@pytest.mark.parametrize("overrides, pattern", [
    (dict(n_channels=0), r"n_channels must be an integer in \[1, 65536\]; got 0"),
    (dict(n_channels=2.5), r"n_channels must be an integer"),
    (dict(fs_hz=1000.0), r"fs_hz must be in \[10000.0, 200000.0\]; got 1000.0"),
    (dict(seed=-1), r"seed must be an integer >= 0; got -1"),
    (dict(block_size=4), r"block_size must be an integer in \[8, 65536\]; got 4"),
    (dict(snr_range=(5.0, 2.0)), r"snr_range must be a \(low, high\) pair with low <= high"),
    (dict(snr_range=(0.0, 2.0)), r"snr_range .* in \(0.0, 1000.0\]"),
    (dict(units_per_channel_p=(0.5, 0.4)), r"units_per_channel_p must hold .* summing to 1; got \(0.5, 0.4\)"),
    (dict(line_noise_hz=55), r"line_noise_hz must be one of \(None, 50.0, 60.0\); got 55.0"),
    (dict(noise_uv=-1.0), r"noise_uv must be in \[0.01, 1000.0\]; got -1.0"),
    (dict(n_dead=10, n_saturating=10, n_channels=16), r"n_dead \+ n_saturating must be <= n_channels \(16\)"),
    (dict(mua_rate_hz=0.0), r"mua_rate_hz must be in \[1, 3000\] when mua_fraction > 0; got 0.0"),
    (dict(refractory_ms_range=(0.1, 1.0)), r"refractory_ms_range .* \[0.5, 10.0\]; got \(0.1, 1.0\)"),
    (dict(drift=float("nan")), r"drift must be a finite number; got nan"),
    (dict(bogus=1), r"ImplantConfig has no field\(s\) \['bogus'\]"),
])
def test_bad_config_raises_config_error(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SimulatedImplant(**overrides)


def test_other_bad_inputs():
    with pytest.raises(ConfigError, match=r"preset must be one of .*; got 'nope'"):
        SimulatedImplant.from_preset("nope")
    with pytest.raises(ConfigError, match="config must be an ImplantConfig"):
        SimulatedImplant(config={"n_channels": 4})
    with pytest.raises(ConfigError, match="intent_fn must be callable"):
        SimulatedImplant(n_channels=8, intent_fn=3)
    imp = SimulatedImplant(n_channels=4, n_dead=0, n_saturating=0)
    with pytest.raises(ConfigError, match="n_samples must be an integer > 0; got 0"):
        imp.read(0)
    with pytest.raises(ConfigError, match="seconds must be a number > 0"):
        imp.read_seconds(-1.0)
    with pytest.raises(ValidationError, match=r"click must be in \[0, 1\]; got 2"):
        imp.set_intent((0, 0), click=2)
    with pytest.raises(ValidationError, match="velocity must be finite"):
        imp.set_intent((np.nan, 0.0))
    with pytest.raises(ValidationError, match="velocity must be two numbers"):
        imp.set_intent((1.0, 2.0, 3.0))
    bad = SimulatedImplant(n_channels=4, n_dead=0, n_saturating=0, intent_fn=lambda s: (0.0, 0.0))
    with pytest.raises(ValidationError, match=r"intent_fn must return \(vx, vy, click\)"):
        bad.read(10)


def test_import_cortexlink_does_not_import_numba():
    code = "import sys, cortexlink; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
