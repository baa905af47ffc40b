"""The calibration's compiled kernels: the robust RMS (a column median bit-identical to numpy's)
and the rail statistics of integer samples (equal to :class:`RailStats`)."""

import warnings

import numpy as np
import pytest

from cortexlink.dsp.calibration import MAD_SCALE, RailStats, _robust_rms


def _numpy_robust_rms(x):
    a = np.abs(x.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(a, axis=0) if np.isnan(a).any() else np.median(a, axis=0)
    return med.astype(np.float64) / MAD_SCALE


def _cases(rng):
    yield rng.normal(0, 7, (1000, 300)).astype(np.float32)          # even rows, noise
    yield rng.normal(0, 7, (999, 37)).astype(np.float32)            # odd rows
    yield rng.integers(-3, 4, (64, 50)).astype(np.float32)          # heavy ties
    yield np.zeros((10, 4), np.float32) * -1.0                      # all zeros (and -0.0)
    yield np.full((7, 3), 1e-42, np.float32)                        # subnormals
    x = rng.normal(0, 1, (40, 20)).astype(np.float32)
    x[::3, ::2] = np.inf                                            # infinities rank above all
    yield x
    x = rng.normal(0, 1, (40, 20)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan                           # NaN columns: nanmedian
    x[:, 0] = np.nan
    yield x
    yield rng.normal(0, 1, (1, 5)).astype(np.float32)               # one row
    yield rng.normal(0, 1, (2, 5)).astype(np.float32)               # two rows
    # values spread over many octaves, so the middle rank falls far from the smallest value
    yield (np.exp(rng.normal(0, 6, (501, 64))) * rng.choice([-1, 1], (501, 64))).astype(np.float32)


def test_robust_rms_matches_numpy_median_bit_for_bit():
    rng = np.random.default_rng(5)
    for x in _cases(rng):
        np.testing.assert_array_equal(_robust_rms(x), _numpy_robust_rms(x))


@pytest.mark.parametrize("seed", range(20))
def test_robust_rms_random_shapes(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 300)), int(rng.integers(1, 300))
    x = (rng.standard_t(3, (n, c)) * rng.uniform(0.01, 100)).astype(np.float32)
    if seed % 2:
        x = np.round(x)
    np.testing.assert_array_equal(_robust_rms(x), _numpy_robust_rms(x))


def test_robust_rms_takes_float64_and_non_contiguous_input():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (200, 60))
    np.testing.assert_array_equal(_robust_rms(x[:, ::2]), _numpy_robust_rms(x[:, ::2]))


def test_robust_rms_of_no_rows_is_nan():
    assert np.isnan(_robust_rms(np.zeros((0, 3), np.float32))).all()


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_integer_rail_statistics_equal_the_reference(dtype):
    from cortexlink.dsp import _side_kernels as SK

    rng = np.random.default_rng(3)
    x = rng.normal(0, 40, (400, 70)).astype(dtype)
    x[:, 3] = 7                                        # flat
    x[::5, 4] = np.iinfo(np.int16).max                 # clipped at the top rail
    x[1::3, 5] = np.iinfo(np.int16).min                # and at the bottom
    x[200:, 6] = x[200:, 6] + 500                      # the extreme moves up half-way
    ref, fast, scalar = RailStats(70), RailStats(70), RailStats(70)
    for a, b in [(0, 1), (1, 31), (31, 31), (31, 200), (200, 229), (229, 400)]:
        ref.update(x[a:b])
        SK.rails_int(x[a:b], fast.mn, fast.mx, fast.n_mn, fast.n_mx, fast.n_finite)
        SK.rails(x[a:b], scalar.mn, scalar.mx, scalar.n_mn, scalar.n_mx, scalar.n_finite)
    for k in ("mn", "mx", "n_mn", "n_mx", "n_finite"):
        np.testing.assert_array_equal(getattr(fast, k), getattr(ref, k), err_msg=k)
        np.testing.assert_array_equal(getattr(scalar, k), getattr(ref, k), err_msg=k)
    assert fast.n_mx[4] == 80 and fast.n_mn[5] == 133 and fast.n_finite[0] == 400
