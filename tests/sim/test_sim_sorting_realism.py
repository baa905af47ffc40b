"""The simulator's sorting realism: footprints, drift, bursts, amplitude variability."""

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sim import ImplantConfig, SimulatedImplant
from cortexlink.sim._sorting_realism import FOOTPRINT_CUTOFF

QUIET = dict(line_noise_hz=None, lfp_uv=0.0, artifact_rate_hz=0.0, n_dead=0, n_saturating=0, mua_fraction=0.0,
             noise_uv=2.0)


def _sta(data_uv, samples, pre, n_w):
    """Spike-triggered mean (n_w, channels) of data around the given trough samples."""
    samples = samples[(samples >= pre) & (samples < len(data_uv) - n_w)]
    w = np.stack([data_uv[s - pre:s - pre + n_w] for s in samples])
    w = w - w[:, :3].mean(axis=1, keepdims=True)
    return w.mean(axis=0)


def test_noop_realism_matches_the_original_kernels_bit_for_bit():
    # a footprint too narrow to reach any neighbour (400 µm pitch, 10 µm decay), no bursts, no
    # jitter: the realism path must give exactly the samples of the original spike kernels
    base = dict(n_channels=12, seed=3, pitch_um=400.0)
    a = SimulatedImplant(**base).read(6000).data
    imp = SimulatedImplant(**base, footprint_um=10.0)
    assert imp._real
    b = imp.read(6000).data
    assert np.array_equal(a, b)
    g = imp.ground_truth()
    assert np.all(g.spike_amplitude_scale == 1.0)
    assert np.all((g.footprint_gains[:, 1:] == 0.0))


def test_defaults_keep_the_model_off():
    imp = SimulatedImplant(n_channels=8, seed=0)
    assert not imp._real
    g = imp.read(3000) and imp.ground_truth()
    assert np.all(g.spike_amplitude_scale == 1.0) and len(g.spike_amplitude_scale) == len(g.spike_samples)
    assert g.unit_position_um.shape == (g.n_units, 2)


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_chunk_size_invariance_with_every_feature(size):
    cfg = dict(n_channels=16, seed=2, pitch_um=25.0, footprint_um=30.0, probe_drift_um=15.0,
               probe_drift_period_s=1.0, amplitude_jitter=0.2, burst_fraction=0.5, burst_attenuation=0.3,
               block_size=64)
    n = 3000 if size > 1 else 700
    whole = SimulatedImplant(**cfg).read(n).data
    imp = SimulatedImplant(**cfg)
    parts, got = [], 0
    while got < n:
        k = min(size, n - got)
        parts.append(imp.read(k).data)
        got += k
    assert np.array_equal(np.concatenate(parts), whole)


def test_footprint_decays_with_distance_in_the_recorded_data():
    imp = SimulatedImplant(n_channels=25, seed=4, pitch_um=25.0, footprint_um=30.0,
                           units_per_channel_p=(0.8, 0.2), **QUIET)
    data = imp.read(int(10 * imp.fs_hz)).data.astype(float) * imp.channel_map.gain_uv
    g = imp.ground_truth()
    pos = imp.channel_map.positions_um
    # gains: 1 on the own channel, exp(-(d - d_own) / 30 µm) elsewhere, none under the cutoff
    u = int(np.argmax(np.bincount(g.spike_units, minlength=g.n_units)))
    ch, gains = g.footprint_channels[u], g.footprint_gains[u]
    d = np.linalg.norm(pos[np.maximum(ch, 0)] - g.unit_position_um[u], axis=1)
    expect = np.exp(-(d - d[0]) / 30.0)
    kept = gains > 0
    assert gains[0] == 1.0 and ch[0] == g.unit_channel[u]
    np.testing.assert_allclose(gains[kept], expect[kept], rtol=1e-5)
    assert np.all(expect[~kept & (ch >= 0)] < FOOTPRINT_CUTOFF)
    # the data: the spike-triggered trough on a neighbour is the gain times the own channel's
    pre = g.template_trough_idx
    sta = _sta(data, g.unit_spike_samples(u), pre, g.unit_templates_uv.shape[1])
    own = -sta[pre, ch[0]]
    nb = int(np.argmax(np.where(kept[1:], gains[1:], 0))) + 1
    assert own > 10 * 2.0 / np.sqrt(len(g.unit_spike_samples(u)))  # well above the averaged noise
    assert -sta[pre, ch[nb]] / own == pytest.approx(gains[nb], abs=0.12)
    far = [c for c in range(25) if c not in set(ch[kept])]
    assert np.max(np.abs(sta[pre, far])) < 0.1 * own


def test_drift_moves_the_footprint_along_the_probe():
    # 25 µm peak drift (one pitch) with a 8 s period: the unit's trough is larger on the channel
    # above its own at the top of the swing and on the channel below at the bottom
    cfg = dict(n_channels=25, seed=5, pitch_um=25.0, footprint_um=20.0, probe_drift_um=25.0,
               probe_drift_period_s=8.0, units_per_channel_p=(0.4, 0.6), baseline_hz_range=(20.0, 40.0),
               depth_hz_range=(0.0, 0.0), click_fraction=0.0, drift=0.0, **QUIET)
    imp = SimulatedImplant(**cfg)
    fs = imp.fs_hz
    data = imp.read(int(8 * fs)).data.astype(float) * imp.channel_map.gain_uv
    g = imp.ground_truth()
    pos = imp.channel_map.positions_um
    t = np.arange(0, len(data), int(0.05 * fs))
    off = g.drift_offset_um(t)
    assert np.ptp(off) > 45.0
    up = t[off > 20.0]
    down = t[off < -20.0]
    near = lambda ts, ref: np.min(np.abs(ts[:, None] - ref[None, :]), axis=1) < 0.05 * fs  # noqa: E731
    inner = [u for u in range(g.n_units)
             if 25.0 <= pos[g.unit_channel[u], 1] <= 75.0 and 25.0 <= pos[g.unit_channel[u], 0] <= 75.0]
    n_both = [min(near(g.unit_spike_samples(u), up).sum(), near(g.unit_spike_samples(u), down).sum()) for u in inner]
    u = inner[int(np.argmax(n_both))]
    assert max(n_both) >= 10
    c = g.unit_channel[u]
    above = int(np.flatnonzero((pos[:, 0] == pos[c, 0]) & (pos[:, 1] == pos[c, 1] + 25.0))[0])
    below = int(np.flatnonzero((pos[:, 0] == pos[c, 0]) & (pos[:, 1] == pos[c, 1] - 25.0))[0])
    s = g.unit_spike_samples(u)
    pre, n_w = g.template_trough_idx, g.unit_templates_uv.shape[1]
    sta_up = _sta(data, s[near(s, up)], pre, n_w)
    sta_down = _sta(data, s[near(s, down)], pre, n_w)
    assert -sta_up[pre, above] > -sta_up[pre, below]
    assert -sta_down[pre, below] > -sta_down[pre, above]
    # ground truth positions follow
    np.testing.assert_allclose(g.unit_position_at(int(up[0]))[u, 1] - g.unit_position_um[u, 1],
                               g.drift_offset_um(int(up[0])))


def test_bursts_and_isi_dependent_attenuation():
    imp = SimulatedImplant(n_channels=16, seed=6, burst_fraction=0.5, burst_attenuation=0.3, burst_mean_spikes=4.0,
                           burst_isi_ms_range=(3.0, 6.0), amplitude_jitter=0.0, footprint_um=20.0, pitch_um=25.0)
    imp.read(int(20 * imp.fs_hz))
    g = imp.ground_truth()
    fs = imp.fs_hz
    short_b, short_n = [], []
    isi_all, scale_all = [], []
    for u in range(g.n_units):
        m = g.spike_units == u
        s = g.spike_samples[m]
        if len(s) < 20:
            continue
        isi = np.diff(s) / fs * 1e3
        (short_b if g.unit_bursting[u] else short_n).append(np.mean((isi >= 3.0) & (isi <= 6.5)))
        isi_all.append(isi)
        scale_all.append(g.spike_amplitude_scale[m][1:])
    assert short_b and short_n
    assert np.median(short_b) > 0.3 > 3 * np.median(short_n)
    isi, scale = np.concatenate(isi_all), np.concatenate(scale_all)
    assert np.all(scale <= 1.0)
    assert np.median(scale[isi < 8.0]) < 0.85 < np.median(scale[isi > 200.0])


def test_amplitude_jitter_spread():
    imp = SimulatedImplant(n_channels=16, seed=7, amplitude_jitter=0.2)
    imp.read(int(5 * imp.fs_hz))
    sc = imp.ground_truth().spike_amplitude_scale
    assert np.std(np.log(sc)) == pytest.approx(0.2, rel=0.15)


@pytest.mark.parametrize("field, value, match", [
    ("footprint_um", -1.0, "footprint_um"),
    ("amplitude_jitter", 2.0, "amplitude_jitter"),
    ("burst_isi_ms_range", (8.0, 3.0), "burst_isi_ms_range"),
    ("burst_mean_spikes", 0.5, "burst_mean_spikes"),
    ("probe_drift_period_s", 0.0, "probe_drift_period_s"),
])
def test_bad_config_refused(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ImplantConfig(**{field: value})


def test_drift_needs_a_footprint():
    with pytest.raises(ConfigError, match="probe_drift_um needs footprint_um > 0"):
        ImplantConfig(probe_drift_um=10.0)


def test_probe_columns_lay_out_a_shank():
    imp = SimulatedImplant(n_channels=12, probe_columns=2, pitch_um=20.0, seed=0)
    pos = imp.channel_map.positions_um
    assert sorted(set(pos[:, 0])) == [0.0, 20.0] and pos[:, 1].max() == 100.0
    assert np.array_equal(SimulatedImplant(n_channels=12, seed=0).channel_map.positions_um,
                          imp.channel_map.positions_um) is False
    with pytest.raises(ConfigError, match="probe_columns"):
        ImplantConfig(probe_columns=0)
