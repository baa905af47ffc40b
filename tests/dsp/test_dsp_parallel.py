"""The chain split over several blocks, groups and threads gives exactly the one-thread result."""

import numpy as np
import pytest

from cortexlink import BinnedFeatures, Chunk
from cortexlink.core.errors import ConfigError
from cortexlink.dsp import FeatureConfig, FeatureExtractor
from cortexlink.dsp import _kernels as K
from cortexlink.dsp import _side_kernels as SK

FS = 30000.0
CAL_S = 0.05  # 1500 samples = 5 bins of 300


def _fx(cmap, **kw):
    kw.setdefault("calibration_s", CAL_S)
    kw.setdefault("bin_ms", 10.0)
    return FeatureExtractor(cmap, FS, keep_events=True, **kw)


def _stream(fx, data, chunk):
    return BinnedFeatures.concat([fx.step(Chunk(data[i:i + chunk], FS, i)) for i in range(0, data.shape[0], chunk)])


def _same(a, b):
    assert a.feature_names == b.feature_names and a.gaps == b.gaps
    np.testing.assert_array_equal(a.bin_start_samples, b.bin_start_samples)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.data, b.data)      # bit for bit, NaN where masked


def _same_events(fa, fb):
    ea, eb = fa.events_, fb.events_
    assert len(ea) == len(eb) > 0
    for f in ("channel_idx", "sample_idx", "trough_sample_idx", "trough_uv"):
        np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f))


@pytest.fixture
def wide(signal):
    """More channels than one group (ragged last group), NaN stretches, a dead channel."""
    data, cmap, _ = signal(3 * K.GROUP + 37, 4500, dtype=np.float32, common_uv=15.0, seed=3)
    data[2000:2045, 5] = np.nan                  # a good channel goes NaN for a while
    data[3000:3001, 300:310] = np.inf            # one sample of Inf across a few channels
    data[:, 700] = np.nan                        # a channel that never has a finite sample
    return data, cmap


@pytest.mark.parametrize("threads", [2, 3, 16])
@pytest.mark.parametrize("chunk", [1, 30, 997])
def test_threads_give_the_one_thread_features_and_events_bit_for_bit(wide, threads, chunk):
    data, cmap = wide
    one = _fx(cmap)
    ref = _stream(one, data, 30)
    par = _fx(cmap, n_threads=threads)
    got = _stream(par, data, chunk)
    assert par.n_threads_ == min(threads, 4)     # 4 groups of channels
    _same(got, ref)
    _same_events(par, one)
    np.testing.assert_array_equal(par.n_nonfinite_samples_, one.n_nonfinite_samples_)
    assert got.valid[5:].any() and not got.valid[:, 700].any()


@pytest.mark.parametrize("kw", [{"reference": "lrr"}, {"reference": "none"}, {"filter_order": 3},
                                {"lfp_band_hz": (1.0, 300.0)}, {"dead_time_ms": 0.0, "trough_window_ms": 0.0}])
def test_threads_equal_one_thread_for_every_reference_and_option(wide, kw):
    data, cmap = wide
    data = data[:3000]
    one, par = _fx(cmap, **kw), _fx(cmap, n_threads=2, **kw)
    _same(_stream(par, data, 30), _stream(one, data, 30))
    _same_events(par, one)


@pytest.mark.parametrize("on_gap", ["bridge", "reset"])
def test_threads_equal_one_thread_across_gaps(wide, on_gap):
    data, cmap = wide
    one, par = _fx(cmap, on_gap=on_gap), _fx(cmap, on_gap=on_gap, n_threads=3)
    outs = []
    for fx in (one, par):
        parts = [fx.step(Chunk(data[a:a + 30], FS, a)) for a in range(0, 4500, 30) if not 2400 <= a < 2700]
        outs.append(BinnedFeatures.concat(parts))
    assert outs[0].gaps == ((2400, 300),)
    _same(outs[1], outs[0])
    _same_events(par, one)


def test_wide_numba_equals_numpy_backend_with_the_same_calibration(wide):
    """Several groups and blocks against the array reference (features to float rounding)."""
    data, cmap = wide
    data = np.nan_to_num(data[:3000], nan=0.0, posinf=0.0)
    a = _fx(cmap, n_threads=2)
    a.apply(data, chunk_size=30)                  # calibrates on its first CAL_S
    fa = a.apply(data, chunk_size=30)             # with that calibration from the first sample
    b = _fx(cmap, backend="numpy").set_calibration(a.calibration_)
    fb = b.apply(data, chunk_size=30)
    np.testing.assert_array_equal(fa.valid, fb.valid)
    tx = np.array([n.endswith("/tx") for n in fa.feature_names])
    np.testing.assert_array_equal(fa.data[:, tx], fb.data[:, tx])
    np.testing.assert_allclose(fa.data[:, ~tx], fb.data[:, ~tx], rtol=1e-4, atol=1e-5, equal_nan=True)
    for f in ("channel_idx", "sample_idx", "trough_sample_idx"):
        np.testing.assert_array_equal(getattr(a.events_, f), getattr(b.events_, f))


def test_more_channels_than_one_block_equal_numpy(signal):
    """The one-thread kernel's blocks (BLOCK channels) and a ragged last one."""
    data, cmap, _ = signal(K.BLOCK + 300, 1800, seed=5, rate_hz=60.0)
    a = FeatureExtractor(cmap, FS, calibration_s=0.02, bin_ms=10.0, keep_events=True)
    a.apply(data, chunk_size=30)
    fa = a.apply(data, chunk_size=30)
    b = FeatureExtractor(cmap, FS, calibration_s=0.02, bin_ms=10.0, keep_events=True, backend="numpy")
    fb = b.set_calibration(a.calibration_).apply(data, chunk_size=30)
    np.testing.assert_array_equal(fa.valid, fb.valid)
    np.testing.assert_allclose(fa.data, fb.data, rtol=1e-4, atol=1e-5, equal_nan=True)
    for f in ("channel_idx", "sample_idx", "trough_sample_idx"):
        np.testing.assert_array_equal(getattr(a.events_, f), getattr(b.events_, f))
    assert len(a.events_) > 1000


def test_n_threads_zero_means_every_core_and_bad_values_are_refused(signal):
    _, cmap, _ = signal(4 * K.GROUP, 100)
    fx = FeatureExtractor(cmap, FS, n_threads=0)
    import os

    assert fx.n_threads_ == max(1, min(os.cpu_count() or 1, 4))
    assert FeatureExtractor(cmap, FS).n_threads_ == 1
    assert FeatureExtractor(cmap, FS, backend="numpy", n_threads=4).n_threads_ == 1
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="n_threads must be an integer in \\[0, 1024\\]"):
            FeatureConfig(n_threads=bad)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_compiled_rail_statistics_equal_the_array_code(dtype):
    from cortexlink.dsp.calibration import RailStats

    rng = np.random.default_rng(1)
    x = rng.integers(-5, 6, (400, 9)).astype(dtype)       # few values: extremes hit often
    x[:, 3] = 7                                           # flat channel
    if dtype == np.float32:
        x[10:20, 4] = np.nan
        x[5, 5] = -np.inf
        x[:, 6] = np.nan                                  # never finite
    a, b = RailStats(9), RailStats(9)
    for i in range(0, 400, 37):                           # blocks vs one compiled pass per block
        a.update(x[i:i + 37])
        SK.rails(x[i:i + 37], b.mn, b.mx, b.n_mn, b.n_mx, b.n_finite)
    for f in ("mn", "mx", "n_mn", "n_mx", "n_finite"):
        np.testing.assert_array_equal(getattr(b, f), getattr(a, f))
