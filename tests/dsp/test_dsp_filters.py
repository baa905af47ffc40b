import numpy as np
import pytest
from scipy import signal as ss

from cortexlink import ConfigError, ValidationError
from cortexlink.dsp import SOSFilter, design_bandpass

FS = 30000.0
BACKENDS = ["numba", "numpy"]


def _x(n=3000, c=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 20, (n, c)) + rng.uniform(-2000, 2000, c)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_sosfilter_matches_scipy_sosfilt_with_step_init(backend, order):
    sos = design_bandpass(FS, (250.0, 5000.0), order)
    x = _x()
    y = SOSFilter(sos, x.shape[1], backend=backend).step(x)
    ref = ss.sosfilt(sos, x.astype(np.float64), axis=0, zi=ss.sosfilt_zi(sos)[:, :, None] * x[0].astype(np.float64))[0]
    assert y.dtype == np.float32
    # float32 arithmetic on ±2000 µV offsets: errors far below the 20 µV noise
    np.testing.assert_allclose(y, ref, atol=2e-3 * np.std(ref), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sosfilter_zero_init_matches_default_sosfilt(backend):
    sos = design_bandpass(FS, (300.0, 3000.0), 2)
    x = _x()
    y = SOSFilter(sos, x.shape[1], init="zero", backend=backend).step(x)
    ref = ss.sosfilt(sos, x.astype(np.float64), axis=0)
    np.testing.assert_allclose(y, ref, atol=2e-3 * np.std(ref), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sosfilter_is_chunk_invariant(backend):
    sos = design_bandpass(FS, (250.0, 5000.0), 2)
    x = _x(1000, 5)
    whole = SOSFilter(sos, 5, backend=backend).step(x)
    f = SOSFilter(sos, 5, backend=backend)
    parts = np.concatenate([f.step(x[i:i + 7]) for i in range(0, len(x), 7)])
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sosfilter_nan_outputs_nan_counts_and_restarts(backend):
    sos = design_bandpass(FS, (250.0, 5000.0), 2)
    x = _x(2000, 4)
    x[500:510, 1] = np.nan
    x[700, 2] = np.inf
    f = SOSFilter(sos, 4, backend=backend)
    y = f.step(x)
    assert np.isnan(y[500:510, 1]).all() and np.isnan(y[700, 2])
    assert np.isfinite(np.delete(y, [1, 2], axis=1)).all()
    assert np.isfinite(y[510:, 1]).all() and np.isfinite(y[701:, 2]).all()
    np.testing.assert_array_equal(f.n_nonfinite_samples_, [0, 10, 1, 0])
    # after the NaN run the channel restarts from the steady state of its next sample
    ref = ss.sosfilt(sos, x[510:, 1].astype(np.float64), zi=ss.sosfilt_zi(sos) * float(x[510, 1]))[0]
    np.testing.assert_allclose(y[510:, 1], ref, atol=2e-3 * np.std(ref))
    # the untouched channels are exactly what they would be without the bad samples
    y0 = SOSFilter(sos, 4, backend=backend).step(_x(2000, 4))
    np.testing.assert_array_equal(y[:, [0, 3]], y0[:, [0, 3]])


def test_design_bandpass_validates():
    with pytest.raises(ConfigError, match=r"band_hz must be a pair .* fs_hz/2 = 15000; got \(250.0, 20000.0\)"):
        design_bandpass(FS, (250.0, 20000.0), 2)
    with pytest.raises(ConfigError, match=r"band_hz .* got \(5000, 250\)"):
        design_bandpass(FS, (5000, 250), 2)
    with pytest.raises(ConfigError, match="filter_order must be"):
        design_bandpass(FS, (250, 5000), 0)
    assert design_bandpass(FS, (250, 5000), 3).shape == (3, 6)


def test_sosfilter_rejects_bad_blocks():
    f = SOSFilter(design_bandpass(FS, (250.0, 5000.0), 2), 4)
    with pytest.raises(ValidationError, match="x must have dtype float32; got float64"):
        f.step(np.zeros((10, 4)))
    with pytest.raises(ValidationError, match="x must have 4 channels .*; got 3"):
        f.step(np.zeros((10, 3), np.float32))
    with pytest.raises(ValidationError, match="x must be a 2-D numpy array"):
        f.step(np.zeros(10, np.float32))
    with pytest.raises(ConfigError, match="init must be one of"):
        SOSFilter(design_bandpass(FS, (250.0, 5000.0), 2), 4, init="ones")
