import numpy as np
import pytest

from cortexlink import BinnedFeatures, ChannelMap, Chunk
from cortexlink.dsp import FeatureExtractor, ReferenceFeatureExtractor

FS = 30000.0
CAL_S = 0.1  # 3000 samples = 5 bins of 600


def _fx(cmap, **kw):
    kw.setdefault("calibration_s", CAL_S)
    return FeatureExtractor(cmap, FS, **kw)


@pytest.mark.parametrize("chunk", [1, 7, 30, 1000])
def test_numba_chunk_invariance_is_bit_identical(signal, same_features, chunk):
    data, cmap, _ = signal(12, 9000)
    whole = _fx(cmap, keep_events=True)
    ref = whole.apply(data)
    fx = _fx(cmap, keep_events=True)
    out = fx.apply(data, chunk_size=chunk)
    same_features(out, ref, exact=True)
    np.testing.assert_array_equal(fx.events_.sample_idx, whole.events_.sample_idx)
    np.testing.assert_array_equal(fx.events_.trough_sample_idx, whole.events_.trough_sample_idx)
    assert ref.n_bins == 15 and ref.valid[5:].all() and not ref.valid[:5].any()


@pytest.mark.parametrize("kw", [{"lfp_band_hz": (1.0, 300.0)}, {"reference": "lrr"}, {"reference": "none"}])
@pytest.mark.parametrize("chunk", [1, 7])
def test_numba_chunk_invariance_of_lfp_and_references(signal, same_features, kw, chunk):
    data, cmap, _ = signal(8, 6000, dtype=np.float32, common_uv=10.0)
    data[2500:2600, 1] = np.nan
    same_features(_fx(cmap, **kw).apply(data, chunk_size=chunk), _fx(cmap, **kw).apply(data), exact=True)


@pytest.mark.parametrize("chunk", [1, 7, 30, 1000])
def test_numpy_backend_chunk_invariance(signal, same_features, chunk):
    data, cmap, _ = signal(8, 6000)
    ref = _fx(cmap, backend="numpy").apply(data)
    out = _fx(cmap, backend="numpy").apply(data, chunk_size=chunk)
    same_features(out, ref, exact=False, rtol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"reference": "none"}, {"reference": "lrr"}, {"filter_order": 3},
                                {"lfp_band_hz": (1.0, 300.0)}, {"dead_time_ms": 0.0}])
def test_numba_backend_equals_numpy_backend(signal, same_features, kw):
    data, cmap, _ = signal(16, 12000, common_uv=20.0)
    a = _fx(cmap, keep_events=True, **kw)
    b = _fx(cmap, keep_events=True, backend="numpy", **kw)
    # independent calibrations agree (medians of float32 signals that differ by ~1e-6)
    fa = a.apply(data, chunk_size=700)
    fb = b.apply(data, chunk_size=700)
    np.testing.assert_allclose(a.thresholds_uv_, b.thresholds_uv_, rtol=1e-3)
    np.testing.assert_array_equal(fa.valid, fb.valid)
    np.testing.assert_allclose(fa.select("sbp").data, fb.select("sbp").data, rtol=1e-4, equal_nan=True)
    # with the same calibration, the features and events are the same
    b.set_calibration(a.calibration_)
    fa = a.apply(data, chunk_size=700)
    fb = b.apply(data, chunk_size=700)
    same_features(fa, fb, exact=False, rtol=1e-4)
    assert fa.valid.all() and np.nansum(fa.select("tx").data) > 100
    ea, eb = a.events_, b.events_
    for f in ("channel_idx", "sample_idx", "trough_sample_idx"):
        np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f))
    np.testing.assert_allclose(ea.trough_uv, eb.trough_uv, rtol=1e-4)


def test_reference_feature_extractor_is_numpy_backend(signal):
    _, cmap, _ = signal(4, 100)
    assert ReferenceFeatureExtractor(cmap).backend == "numpy"


def test_feature_names_order_and_bin_alignment(signal):
    data, cmap, _ = signal(3, 6000)
    fx = _fx(cmap, lfp_band_hz=(1.0, 300.0), features=("sbp", "tx"))
    assert fx.feature_names == tuple(f"ch{i:04d}/{k}" for k in ("tx", "sbp", "lfp") for i in range(3))
    start = 123_457
    outs = [fx.step(Chunk(data[i:i + 250], FS, start + i)) for i in range(0, 6000, 250)]
    n_bins = [o.n_bins for o in outs]
    assert n_bins[0] == 0 and n_bins[2] == 1 and sum(n_bins) == 10  # 0 bins is a valid answer
    out = BinnedFeatures.concat(outs)
    np.testing.assert_array_equal(out.bin_start_samples, start + 600 * np.arange(10))
    assert out.bin_width_samples == 600 and out.fs_hz == FS and out.data.dtype == np.float32
    assert out.select("lfp").n_features == 3


def test_calibration_window_is_masked_then_frozen(signal):
    data, cmap, _ = signal(6, 12000)
    fx = _fx(cmap, calibration_s=0.105)  # rounded up to whole bins: 3600 samples = 6 bins
    with pytest.raises(AttributeError, match="not calibrated"):
        fx.thresholds_uv_
    out = fx.apply(data)
    assert fx.calibration_.n_samples == 3600
    assert not out.valid[:6].any() and out.valid[6:].all()
    assert np.isnan(out.data[:6]).all()
    thr = fx.thresholds_uv_.copy()
    assert (thr < 0).all() and np.allclose(thr, -4.5 * fx.noise_rms_uv_)
    # reset keeps the calibration: nothing masked on the next stream
    out2 = fx.apply(data)
    assert out2.valid.all()
    np.testing.assert_array_equal(fx.thresholds_uv_, thr)
    np.testing.assert_array_equal(out2.data[6:], out.data[6:])
    fx.reset(calibration=True)
    assert not fx.is_calibrated
    assert not fx.apply(data).valid[:6].any()


def test_calibrate_offline_and_set_calibration(signal, same_features):
    data, cmap, _ = signal(6, 9000)
    fx = _fx(cmap).calibrate(data[:3000], chunk_size=333)
    out = fx.apply(data)
    assert out.valid.all()
    other = _fx(cmap, backend="numpy").set_calibration(fx.calibration_)
    same_features(other.apply(data), out, exact=False, rtol=1e-4)
    # calibrate() does not touch the stream state of the extractor
    fx.reset()
    a = fx.step(Chunk(data[:1500], FS, 0))
    fx.calibrate(data)
    b = fx.step(Chunk(data[1500:3000], FS, 1500))
    assert a.n_bins + b.n_bins == 5


def test_recalibrate_follows_a_change_in_noise(signal):
    data, cmap, _ = signal(16, 30000, noise_uv=10.0, rate_hz=5.0)
    loud, _, _ = signal(16, 30000, noise_uv=20.0, rate_hz=5.0, seed=1)
    fx = _fx(cmap, calibration_s=0.5)
    fx.step(Chunk(data, FS, 0))
    quiet_rms = fx.noise_rms_uv_.copy()
    fx.recalibrate()
    out = fx.step(Chunk(loud, FS, 30000))
    assert out.valid.all()  # the old calibration stays in force during the new window
    ratio = fx.noise_rms_uv_ / quiet_rms  # a median of ~1000 calibration rows per channel
    assert abs(np.median(ratio) - 2.0) < 0.1 and np.all(np.abs(ratio - 2.0) < 0.4)


def test_sbp_is_mean_absolute_value_and_tx_counts_spikes(signal):
    n = 12000
    t = np.arange(n) / FS
    a = 50.0
    noise = np.random.default_rng(0).normal(0, 0.5, (n, 2))  # (an exactly periodic signal looks clipped)
    x = (a * np.sin(2 * np.pi * 1000.0 * t)[:, None] + noise).astype(np.float32)
    fx = _fx(ChannelMap(["a", "b"]), reference="none")
    out = fx.apply(x)
    sbp = out.select("sbp").data[6:]
    np.testing.assert_allclose(sbp, 2 * a / np.pi, rtol=0.05)  # mean |a sin| = 2a/pi; filter gain ~1 at 1 kHz
    data, cmap, spikes = signal(8, 30000, rate_hz=20.0, spike_uv=100.0)
    fx = _fx(cmap, reference="none")
    out = fx.apply(data)
    tx = out.select("tx")
    after = tx.bin_start_samples >= fx.calibration_.n_samples
    n_true = np.array([np.sum(s >= fx.calibration_.n_samples) for s in spikes])
    np.testing.assert_allclose(np.nansum(tx.data[after], axis=0), n_true, atol=2)


def test_lfp_band_power(signal):
    n = 60000
    t = np.arange(n) / FS
    a = 300.0
    x = (a * np.sin(2 * np.pi * 20.0 * t)[:, None] + np.random.default_rng(0).normal(0, 1, (n, 2))).astype(np.float32)
    fx = _fx(ChannelMap(["a", "b"]), lfp_band_hz=(1.0, 300.0), features=("sbp",))
    out = fx.apply(x, chunk_size=999)
    assert out.feature_names == ("a/sbp", "b/sbp", "a/lfp", "b/lfp")
    lfp = out.select("lfp").data[20:]  # after the 1 Hz high-pass has settled
    np.testing.assert_allclose(lfp.mean(), a ** 2 / 2, rtol=0.1)  # mean square of a sine
    assert out.select("sbp").data[20:].max() < 5.0  # 20 Hz is outside the spike band


def test_lrr_removes_channel_scaled_common_noise_better_than_car(signal):
    data, cmap, _ = signal(16, 15000, dtype=np.float32, rate_hz=2.0)
    rng = np.random.default_rng(5)
    common = rng.normal(0, 30.0, (15000, 1)).astype(np.float32)
    data = data + common * rng.uniform(0.2, 2.0, (1, 16)).astype(np.float32)
    car = _fx(cmap, reference="car", calibration_s=0.3)
    lrr = _fx(cmap, reference="lrr", calibration_s=0.3)
    car.apply(data)
    out = lrr.apply(data)
    assert np.median(lrr.noise_rms_uv_) < 0.7 * np.median(car.noise_rms_uv_)
    assert lrr.calibration_.lrr_matrix.shape == (16, 16)
    np.testing.assert_allclose(np.diag(lrr.calibration_.lrr_matrix), 1.0)
    assert out.valid[-10:].all()


def test_apply_accepts_chunks_and_iterables(signal, same_features):
    data, cmap, _ = signal(4, 6000)
    ref = _fx(cmap).apply(data)
    same_features(_fx(cmap).apply(Chunk(data, FS, 0)), ref)
    same_features(_fx(cmap).apply(Chunk(data[i:i + 999], FS, i) for i in range(0, 6000, 999)), ref)
    assert _fx(cmap).apply([]).n_bins == 0


class _GeneralAssembly(FeatureExtractor):
    """The extractor with its real-time assembly fast path switched off."""

    def _assemble_one(self, block):
        return self._assemble_general([block], [])


@pytest.mark.parametrize("backend", ["numba", "numpy"])      # the compiled kernel and the array code
@pytest.mark.parametrize("feats", [("tx", "sbp"), ("sbp",), ("tx",), ("sbp", "tx")])
def test_realtime_assembly_fast_path_equals_the_general_path(signal, same_features, feats, backend):
    data, cmap, _ = signal(12, 12000)
    cmap = cmap.with_bad([False] * 11 + [True])
    data = data.astype(np.float32) * np.float32(cmap.gain_uv[0])
    data[5000:5040, 3] = np.nan                         # a NaN stretch masks channel 3 in its bins
    fast = _fx(cmap, features=feats, backend=backend)
    slow = _GeneralAssembly(cmap, FS, calibration_s=CAL_S, features=feats, backend=backend)
    a = [fast.step(Chunk(data[i:i + 30], FS, i)) for i in range(0, 12000, 30)]
    b = [slow.step(Chunk(data[i:i + 30], FS, i)) for i in range(0, 12000, 30)]
    same_features(BinnedFeatures.concat(a), BinnedFeatures.concat(b))
    got = BinnedFeatures.concat(a)
    assert not got.valid[:5].any()                      # the calibration bins are masked
    assert not got.valid[:, [i for i, n in enumerate(got.feature_names) if n.startswith("ch0011/")]].any()
    assert got.valid[5:].any()
    assert not got.data.flags.writeable and not got.valid.flags.writeable
