"""Stimulation-artefact removal (cortexlink.dsp.artifacts.StimArtifactRemover) on synthetic data:
noise plus a known artefact waveform at each pulse (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.pulses import empty_pulses
from cortexlink.core.types import Chunk
from cortexlink.dsp.artifacts import REMOVAL_MODES, StimArtifactRemover

FS = 30000.0
C = 8


def _pulses(electrode, time_s, amplitude_ua=50.0, width_us=200.0, gap_us=50.0):
    e, t, a = np.broadcast_arrays(np.asarray(electrode), np.asarray(time_s, float), np.asarray(amplitude_ua, float))
    p = empty_pulses(e.size)
    p["electrode"], p["time_s"] = e.ravel(), t.ravel()
    p["amplitude_ua"] = p["amplitude2_ua"] = a.ravel()
    p["width_us"] = p["width2_us"] = width_us
    p["gap_us"] = gap_us
    p["cathodic_first"] = True
    return p


def _shape(n_channels=C, amp_per_ua=20.0):
    """A fixed artefact per channel (per µA): 14 samples of pulse, then an exponential tail."""
    t = np.arange(150)
    gain = amp_per_ua * np.linspace(1.0, 0.3, n_channels)
    w = np.where(t < 6, -1.0, np.where(t < 8, 0.0, np.where(t < 14, 1.0, 0.3 * np.exp(-(t - 14) / 15.0))))
    return w[:, None] * gain[None, :]


def _signal(pulses, n=9000, *, seed=0, noise_uv=5.0, dtype=np.float32, shape=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, noise_uv, (n, C))
    shape = _shape() if shape is None else shape
    for p in pulses:
        k0 = int(round(p["time_s"] * FS))
        seg = shape[:max(0, min(len(shape), n - k0))] * p["amplitude_ua"]
        x[k0:k0 + len(seg)] += seg
    if dtype == np.int16:
        return np.clip(np.rint(x / 0.195), -32768, 32767).astype(np.int16), x
    return x.astype(np.float32), x


def _train(n=25, period_s=0.01, start_s=0.003, electrode=2, amplitude_ua=50.0):
    return _pulses(electrode, start_s + period_s * np.arange(n), amplitude_ua)


def _step_all(rm, data, sizes, start=0):
    out, i = [], 0
    for s in sizes:
        out.append(rm.step(Chunk(data[i:i + s], FS, start + i)).data)
        i += s
    return np.concatenate(out)


@pytest.mark.parametrize("mode", REMOVAL_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_apply_equals_step_for_any_chunking(mode, dtype):
    p = _train()
    data, _ = _signal(p, dtype=dtype)
    ref = StimArtifactRemover(C, FS, mode).apply(data, p)
    assert ref.dtype == dtype and ref.shape == data.shape
    for sizes in ([1] * 500 + [8500], [7] * 1285 + [5], [1000] * 9, [4321, 4679]):
        rm = StimArtifactRemover(C, FS, mode)
        rm.schedule(p)
        np.testing.assert_array_equal(_step_all(rm, data, sizes), ref)
    # apply in chunks is the same
    np.testing.assert_array_equal(StimArtifactRemover(C, FS, mode).apply(data, p, chunk_size=13), ref)


def test_blank_holds_the_last_clean_sample_over_each_window_and_counts_samples():
    p = _train(5)
    data, _ = _signal(p)
    rm = StimArtifactRemover(C, FS, "blank", blank_pre_ms=0.1, blank_post_ms=1.5, keep_intervals=True)
    rm.schedule(p)
    sizes = [100, 150, 3000, 5750]
    counts, outs, i = [], [], 0
    for n in sizes:
        outs.append(rm.step(Chunk(data[i:i + n], FS, i)).data)
        counts.append(rm.n_blanked_last_)
        i += n
    out = np.concatenate(outs)
    k0 = np.round(p["time_s"] * FS).astype(int)
    kend = np.round((p["time_s"] + 450e-6) * FS).astype(int)
    w0, w1 = k0 - 3, kend + 45
    mask = np.zeros(len(data), bool)
    for a, b in zip(w0, w1):
        mask[a:b] = True
        np.testing.assert_array_equal(out[a:b], np.repeat(data[a - 1:a], b - a, axis=0))
    np.testing.assert_array_equal(out[~mask], data[~mask])
    np.testing.assert_array_equal(rm.blanked_intervals_, np.stack([w0, w1], 1))
    assert rm.n_blanked_samples_ == mask.sum() == sum(counts)
    assert counts == [int(mask[a:a + s].sum()) for a, s in zip(np.cumsum([0] + sizes[:-1]), sizes)]
    # a window spanning two chunks (chunk edge at 100 inside [87, 150)): counts in both
    assert w0[0] < 100 < w1[0] and counts[0] > 0 and counts[1] > 0
    with pytest.raises(ConfigError, match="keep_intervals=True"):
        StimArtifactRemover(C, FS).blanked_intervals_


def test_template_is_learned_from_the_first_pulses_and_subtracted_from_the_next():
    p = _train(30)
    data, _ = _signal(p, noise_uv=2.0)
    clean = np.random.default_rng(0).normal(0, 2.0, data.shape)     # the same noise draw
    n_learn = 10
    rm = StimArtifactRemover(C, FS, "template", n_template_pulses=n_learn)
    out = rm.apply(data, p, chunk_size=97)
    k0 = np.round(p["time_s"] * FS).astype(int)
    art_peak = np.abs(data - clean).max()
    # the first pulse has no template yet: its artefact passes
    assert np.abs(out[k0[0]:k0[0] + 14] - clean[k0[0]:k0[0] + 14]).max() > 0.5 * art_peak
    # after the learning pulses the residual is at the noise level (the template averages
    # 10 pulses of 2 µV noise, plus the 2 µV noise of the pulse's own baseline sample)
    late = np.concatenate([np.arange(k, k + 150) for k in k0[n_learn + 1:]])
    resid = out[late] - clean[late]
    assert np.abs(resid).max() < 0.02 * art_peak
    assert np.std(resid) < 2.0
    (key, count), = rm.n_template_pulses_.items()
    assert count == n_learn and key[0][0] == 2          # one template: electrode 2's pulse shape
    assert rm.n_blanked_samples_ == 0


def test_template_scales_with_pulse_amplitude():
    amps = np.where(np.arange(30) % 2 == 0, 20.0, 60.0)
    p = _pulses(2, 0.003 + 0.01 * np.arange(30), amps)
    data, _ = _signal(p, noise_uv=1.0)
    noise = np.random.default_rng(0).normal(0, 1.0, data.shape)
    k0 = np.round(p["time_s"] * FS).astype(int)
    late = np.concatenate([np.arange(k, k + 150) for k in k0[12:]])
    scaled = StimArtifactRemover(C, FS, "template", n_template_pulses=10).apply(data, p)
    unscaled = StimArtifactRemover(C, FS, "template", n_template_pulses=10, scale_by_amplitude=False).apply(data, p)
    r_s = np.abs(scaled[late] - noise[late]).max()
    r_u = np.abs(unscaled[late] - noise[late]).max()
    assert r_s < 10.0 < 0.1 * r_u


def test_blank_plus_template_subtracts_only_after_the_window():
    p = _train(30)
    data, _ = _signal(p, noise_uv=2.0)
    noise = np.random.default_rng(0).normal(0, 2.0, data.shape)
    blank = StimArtifactRemover(C, FS, "blank").apply(data, p)
    both = StimArtifactRemover(C, FS, "blank+template", n_template_pulses=10)
    out = both.apply(data, p)
    k0 = np.round(p["time_s"] * FS).astype(int)
    w1 = k0 + 14 + 45
    for a, b in zip(k0 - 3, w1):
        np.testing.assert_array_equal(out[a:b], blank[a:b])     # the blank window is the same
    tail = np.concatenate([np.arange(b, k + 150) for k, b in zip(k0[11:], w1[11:])])
    assert np.abs(out[tail] - noise[tail]).max() < 10.0
    # right after the window: blanking alone leaves the artefact's tail (~15 µV here), the template removes it
    early = np.concatenate([np.arange(b, b + 10) for b in w1[11:]])
    assert np.abs(blank[early] - noise[early]).mean() > 5.0 > 5 * np.abs(out[early] - noise[early]).mean()


def test_simultaneous_pulses_are_one_event_with_one_template():
    t = 0.003 + 0.01 * np.arange(30)
    p = np.concatenate([_pulses(2, t), _pulses(5, t, 30.0)])
    shape = _shape()
    data, _ = _signal(_pulses(2, t), noise_uv=1.0, shape=shape)
    data = data + _signal(_pulses(5, t, 30.0), noise_uv=0.0, shape=shape[:, ::-1].copy())[0]
    noise = np.random.default_rng(0).normal(0, 1.0, data.shape)
    rm = StimArtifactRemover(C, FS, "template", n_template_pulses=10, scale_by_amplitude=False)
    out = rm.apply(data, p)
    assert list(rm.n_template_pulses_.values()) == [10]
    assert len(next(iter(rm.n_template_pulses_))) == 2
    k0 = np.round(t * FS).astype(int)
    late = np.concatenate([np.arange(k, k + 150) for k in k0[11:]])
    assert np.abs(out[late] - noise[late]).max() < 6.0


def test_template_segments_stop_at_the_next_pulse():
    # pulses 2 ms apart with a 5 ms template: each segment ends where the next one starts, so no
    # artefact is subtracted twice. Templates are relative to the sample before the pulse, so the
    # steady level of the earlier pulses' overlapping tails stays (a constant the band-pass removes)
    p = _train(60, period_s=0.002)
    data, _ = _signal(p, noise_uv=1.0)
    noise = np.random.default_rng(0).normal(0, 1.0, data.shape)
    rm = StimArtifactRemover(C, FS, "template", n_template_pulses=20)
    out = rm.apply(data, p)
    k0 = np.round(p["time_s"] * FS).astype(int)
    late = np.arange(k0[25], k0[-1])
    resid = out[late] - noise[late]
    assert np.abs(data[late] - noise[late]).max() > 500.0
    assert np.abs(resid - resid.mean(0)).max() < 6.0


def test_pulses_scheduled_while_streaming_equal_pulses_scheduled_up_front_and_late_ones_are_counted():
    p = _train(20)
    data, _ = _signal(p)
    ref = StimArtifactRemover(C, FS, "blank+template", n_template_pulses=5).apply(data, p)
    rm = StimArtifactRemover(C, FS, "blank+template", n_template_pulses=5)
    parts = []
    rm.schedule(p[:5])
    parts.append(rm.step(Chunk(data[:1000], FS, 0)).data)       # pulses 0-2 are in the past
    rm.schedule(p[5:])
    parts.append(rm.step(Chunk(data[1000:], FS, 1000)).data)
    np.testing.assert_array_equal(np.concatenate(parts), ref)
    assert rm.schedule(p[:1]) == 0 and rm.n_late_pulses_ == 1     # its window is over


def test_gap_skips_windows_inside_it():
    p = _train(10)
    data, _ = _signal(p)
    rm = StimArtifactRemover(C, FS, "blank", keep_intervals=True)
    rm.schedule(p)
    rm.step(Chunk(data[:200], FS, 0))
    out = rm.step(Chunk(data[2000:3000], FS, 2000))
    assert out.start_sample == 2000 and out.data.shape == (1000, C)
    iv = rm.blanked_intervals_
    assert not np.any((iv[:, 1] > 200) & (iv[:, 0] < 2000))


@pytest.mark.parametrize("kw, msg", [
    (dict(mode="median"), r"mode must be one of"),
    (dict(blank_pre_ms=-1.0), r"blank_pre_ms must be in \[0.0, 10.0\]"),
    (dict(blank_post_ms=100.0), r"blank_post_ms must be in \[0.0, 50.0\]"),
    (dict(template_ms=0.0), r"template_ms must be in"),
    (dict(n_template_pulses=0), r"n_template_pulses must be an integer in \[1, 100000\]"),
    (dict(n_template_pulses=2.5), r"n_template_pulses must be an integer"),
    (dict(scale_by_amplitude="yes"), r"scale_by_amplitude must be True or False"),
    (dict(keep_intervals=1), r"keep_intervals must be True or False"),
])
def test_bad_parameters_raise(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        StimArtifactRemover(C, FS, **kw)


def test_bad_shape_arguments_raise():
    with pytest.raises(ConfigError, match="n_channels"):
        StimArtifactRemover(0, FS)
    with pytest.raises(ConfigError, match="fs_hz"):
        StimArtifactRemover(C, -1.0)


def test_bad_chunks_and_pulses_raise():
    rm = StimArtifactRemover(C, FS, "template")
    data = np.zeros((100, C), np.float32)
    with pytest.raises(ValidationError, match="chunk must be a cortexlink.Chunk"):
        rm.step(data)
    with pytest.raises(ValidationError, match="dtype int16"):
        rm.step(Chunk(data.astype(np.float64), FS, 0))
    with pytest.raises(ValidationError, match=f"must have {C} channels"):
        rm.step(Chunk(np.zeros((10, C + 1), np.float32), FS, 0))
    with pytest.raises(ValidationError, match="fs_hz must equal"):
        rm.step(Chunk(data, 20000.0, 0))
    rm.step(Chunk(data, FS, 0))
    with pytest.raises(ValidationError, match="start_sample must be >= 100"):
        rm.step(Chunk(data, FS, 50))
    with pytest.raises(ValidationError, match="pulses must be a structured array"):
        rm.schedule(np.zeros(3))
    bad = _train(2)
    bad["width_us"][1] = 0.0
    with pytest.raises(ValidationError, match="pulses: width_us must be finite and > 0"):
        rm.schedule(bad)
    bad = _train(2)
    bad["time_s"][0] = np.nan
    with pytest.raises(ValidationError, match="pulses: time_s must be finite"):
        rm.schedule(bad)
    bad = _train(2, amplitude_ua=0.0)
    with pytest.raises(ValidationError, match="amplitude_ua must be finite and > 0"):
        rm.schedule(bad)
    StimArtifactRemover(C, FS, "blank").schedule(bad)      # blanking does not need amplitudes
    with pytest.raises(ValidationError, match="data must be a 2-D numpy array"):
        rm.apply([1, 2, 3], _train(1))


def test_pulses_scheduled_just_in_time_at_chunk_starts_are_still_learned():
    # a stimulator that delivers each chunk's pulses right before the chunk, with pulses on the
    # chunk's first sample: the segment's first rows (blank_pre_ms) are in the previous chunk
    p = _train(25, period_s=0.01, start_s=0.01)
    data, _ = _signal(p, noise_uv=2.0)
    noise = np.random.default_rng(0).normal(0, 2.0, data.shape)
    rm = StimArtifactRemover(C, FS, "template", n_template_pulses=10)
    k0 = np.round(p["time_s"] * FS).astype(int)
    outs = []
    for s in range(0, len(data), 300):
        rm.schedule(p[(k0 >= s) & (k0 < s + 300)])
        outs.append(rm.step(Chunk(data[s:s + 300], FS, s)).data)
    out = np.concatenate(outs)
    assert rm.n_late_pulses_ == 0 and list(rm.n_template_pulses_.values()) == [10]
    late = np.concatenate([np.arange(k, k + 150) for k in k0[11:]])
    assert np.abs(out[late] - noise[late]).max() < 10.0
