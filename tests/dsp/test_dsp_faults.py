import numpy as np
import pytest

from cortexlink import BinnedFeatures, Chunk, ValidationError
from cortexlink.core.errors import GapError
from cortexlink.dsp import FeatureExtractor

FS = 30000.0
BACKENDS = ["numba", "numpy"]


def _fx(cmap, **kw):
    kw.setdefault("calibration_s", 0.1)
    return FeatureExtractor(cmap, FS, **kw)


def _cols(out, ch):
    """Columns of channel index ``ch`` (tx and sbp)."""
    n = out.n_features // 2
    return [ch, n + ch]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_on_a_bad_channel_changes_nothing_else(signal, backend):
    data, cmap, _ = signal(12, 9000, dtype=np.float32)
    cmap = cmap.with_bad([3])
    dirty = data.copy()
    dirty[4000:4300, 3] = np.nan
    dirty[7000, 3] = np.inf
    clean_out = _fx(cmap, backend=backend).apply(data, chunk_size=500)
    fx = _fx(cmap, backend=backend)
    out = fx.apply(dirty, chunk_size=500)
    others = [c for c in range(out.n_features) if c not in _cols(out, 3)]
    np.testing.assert_array_equal(out.data[:, others], clean_out.data[:, others])
    assert not out.valid[:, _cols(out, 3)].any()
    assert fx.n_nonfinite_samples_[3] == 301 and fx.counters_["n_nonfinite_samples"] == 301


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_on_a_good_channel_is_masked_counted_and_never_leaks(signal, backend):
    data, cmap, _ = signal(16, 12000, dtype=np.float32, common_uv=5.0)
    dirty = data.copy()
    dirty[6100:6400, 5] = np.nan  # bins 10 (6000-6599)
    dirty[9000, 5] = -np.inf  # bin 15
    fx = _fx(cmap, backend=backend)
    out = fx.apply(dirty, chunk_size=333)
    clean = _fx(cmap, backend=backend).apply(data, chunk_size=333)
    np.testing.assert_array_equal(fx.n_nonfinite_samples_, np.eye(16, dtype=np.int64)[5] * 301)
    c5 = _cols(out, 5)
    bad_bins = [10, 15]
    assert not out.valid[bad_bins][:, c5].any() and np.isnan(out.data[bad_bins][:, c5]).all()
    good_bins = [b for b in range(5, out.n_bins) if b not in bad_bins]
    assert out.valid[good_bins][:, c5].all()  # the channel recovers after the NaN run
    others = [c for c in range(out.n_features) if c not in c5]
    # every other channel stays valid and finite everywhere after calibration ...
    assert out.valid[5:][:, others].all() and np.isfinite(out.data[5:][:, others]).all()
    # ... identical before the NaN, and close after it (channel 5 left the average for 301 samples)
    np.testing.assert_array_equal(out.data[:10], clean.data[:10])
    sbp = np.arange(16, 32)
    sbp = sbp[sbp != 16 + 5]
    np.testing.assert_allclose(out.data[10:, sbp], clean.data[10:, sbp], rtol=0.03)


def test_nan_during_calibration_and_all_nan_channel(signal):
    data, cmap, _ = signal(8, 9000, dtype=np.float32)
    data[:, 6] = np.nan
    data[100:200, 2] = np.nan
    fx = _fx(cmap)
    out = fx.apply(data)
    assert fx.calibration_.nonfinite[6] and fx.bad_channels_[6] and not fx.bad_channels_[2]
    assert not out.valid[:, _cols(out, 6)].any()
    assert out.valid[5:][:, _cols(out, 2)].all()
    assert fx.n_nonfinite_samples_[6] == 9000 and fx.n_nonfinite_samples_[2] == 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_and_saturated_channels_are_detected_and_left_out_of_the_reference(signal, backend):
    data, cmap, _ = signal(16, 12000)
    dirty = data.copy()
    dirty[:, 2] = 1234  # dead: constant
    dirty[:, 9] = np.clip(data[:, 9].astype(np.int32) * 20 + 32000, -32768, 32767)  # sits at the rail
    dirty[:, 11] //= 1000  # nearly dead: |x| < 0.5 µV after filtering
    fx = _fx(cmap, backend=backend)
    out = fx.apply(dirty)
    cal = fx.calibration_
    assert np.flatnonzero(cal.flat).tolist() == [2, 11]
    assert np.flatnonzero(cal.saturated).tolist() == [9]
    assert np.flatnonzero(fx.bad_channels_).tolist() == [2, 9, 11]
    assert np.flatnonzero(fx.channel_map_.bad).tolist() == [2, 9, 11]
    assert cal.bad_reasons()["saturated"].tolist() == [9]
    for c in (2, 9, 11):
        assert not out.valid[:, _cols(out, c)].any()
    # after calibration the good channels are exactly what they are when those channels are
    # declared bad up front: the detected channels are out of the reference
    known = _fx(cmap.with_bad([2, 9, 11]), backend=backend)
    ref = known.apply(dirty)
    good = [c for c in range(out.n_features) if out.valid[-1, c]]
    assert len(good) == 26
    np.testing.assert_array_equal(out.data[5:, good], ref.data[5:, good])


@pytest.mark.parametrize("backend", BACKENDS)
def test_car_excludes_bad_channels(signal, backend):
    data, cmap, _ = signal(8, 9000, dtype=np.float32)
    cmap = cmap.with_bad([0])
    wild = data.copy()
    wild[:, 0] = np.random.default_rng(1).normal(0, 5000, 9000)
    zero = data.copy()
    zero[:, 0] = 0.0
    a = _fx(cmap, backend=backend).apply(wild)
    b = _fx(cmap, backend=backend).apply(zero)
    np.testing.assert_array_equal(a.data, b.data)
    assert np.isnan(a.data[:, _cols(a, 0)]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gap_bridge_records_masks_and_keeps_the_grid(signal, backend):
    data, cmap, _ = signal(6, 12000)
    fx = _fx(cmap, backend=backend, on_gap="bridge")
    outs = [fx.step(Chunk(data[:6100], FS, 0))]
    gap = fx.step(Chunk(data[6100:6200], FS, 6100 + 1450))  # 1450 samples lost at 6100
    outs.append(gap)
    outs.append(fx.step(Chunk(data[6200:], FS, 6200 + 1450)))
    assert gap.gaps == ((6100, 1450),)
    assert fx.n_gaps_ == 1 and fx.n_missing_samples_ == 1450 and fx.counters_["n_gaps"] == 1
    starts = np.concatenate([o.bin_start_samples for o in outs])
    valid = np.concatenate([o.valid for o in outs])
    assert np.all(starts % 600 == 0)  # same grid
    # bin 6000 (partial) and 7200 (holds the first sample after the gap, 7550) are masked;
    # bin 6600 lies entirely in the gap and is not emitted
    assert 6600 not in starts
    for s in (6000, 7200):
        assert not valid[starts == s].any()
    assert valid[(starts >= 3000) & ((starts < 6000) | (starts > 7200))].all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gap_reset_realigns_bins_and_restarts_filters(signal, backend):
    data, cmap, _ = signal(6, 12000)
    fx = _fx(cmap, backend=backend, on_gap="reset")
    a = fx.step(Chunk(data[:6100], FS, 0))
    b = fx.step(Chunk(data[6100:], FS, 50_000))
    assert b.gaps == ((6100, 43_900),) and fx.n_gaps_ == 1
    assert b.bin_start_samples[0] == 6000 and not b.valid[0].any()  # the partial bin, masked
    np.testing.assert_array_equal(b.bin_start_samples[1:], 50_000 + 600 * np.arange(b.n_bins - 1))
    assert b.valid[1:].all() and a.valid[5:].all()
    # after a reset the stream continues as a fresh (already calibrated) stream would
    fresh = _fx(cmap, backend=backend).set_calibration(fx.calibration_)
    c = fresh.step(Chunk(data[6100:], FS, 50_000))
    np.testing.assert_array_equal(b.data[1:], c.data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gap_raise_leaves_the_state_untouched(signal, backend, same_features):
    data, cmap, _ = signal(4, 6000)
    fx = _fx(cmap, backend=backend, on_gap="raise")
    parts = [fx.step(Chunk(data[:3100], FS, 0))]
    with pytest.raises(GapError, match=r"start_sample jumped from the expected 3100 to 3200: 100 samples missing"):
        fx.step(Chunk(data[3100:], FS, 3200))
    assert fx.n_gaps_ == 0
    parts.append(fx.step(Chunk(data[3100:], FS, 3100)))
    same_features(BinnedFeatures.concat(parts), _fx(cmap, backend=backend).apply(data))


def test_overlapping_or_backwards_chunks_are_rejected(signal):
    data, cmap, _ = signal(4, 3000)
    fx = _fx(cmap)
    fx.step(Chunk(data[:1000], FS, 500))
    with pytest.raises(ValidationError, match=r"chunk.start_sample must be >= 1500 .*; got 1400"):
        fx.step(Chunk(data[1000:], FS, 1400))
    with pytest.raises(ValidationError, match=r"got 0"):
        fx.step(Chunk(data[1000:], FS, 0))


def test_gap_inside_calibration_and_events_flush_on_reset(signal):
    data, cmap, spikes = signal(4, 12000, spike_uv=120.0)
    fx = _fx(cmap, on_gap="reset", keep_events=True, calibration_s=0.2)
    fx.step(Chunk(data[:3000], FS, 0))
    fx.step(Chunk(data[3000:], FS, 4000))
    assert fx.is_calibrated and fx.calibration_.n_samples == 6000
    ev = fx.events_
    assert len(ev) > 0 and np.all(ev.trough_sample_idx >= ev.sample_idx)
