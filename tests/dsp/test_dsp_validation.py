import re

import numpy as np
import pytest

from cortexlink import ChannelMap, Chunk, ConfigError, NotFittedError, ValidationError
from cortexlink.dsp import FeatureExtractor, detect_crossings, scipy_chain

FS = 30000.0
CM = ChannelMap.grid(4)


@pytest.mark.parametrize("kw, msg", [
    ({"fs_hz": -1.0}, "fs_hz must be a finite number > 0; got -1.0"),
    ({"band_hz": (250.0, 20000.0)}, "band_hz must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz < fs_hz/2 = 15000; got (250.0, 20000.0)"),
    ({"band_hz": 300}, "band_hz must be a pair"),
    ({"filter_order": 0}, "filter_order must be an integer in [1, 12]; got 0"),
    ({"filter_order": 2.5}, "filter_order must be an integer in [1, 12]; got 2.5"),
    ({"filter_order": True}, "filter_order must be an integer in [1, 12]; got True"),
    ({"reference": "avg"}, "reference must be one of ('car', 'lrr', 'none'); got 'avg'"),
    ({"threshold_rms": 4.5}, "threshold_rms must be a negative number (negative-going crossings, e.g. -4.5); got 4.5"),
    ({"threshold_rms": float("nan")}, "threshold_rms must be a finite number; got nan"),
    ({"bin_ms": 0.01}, "bin_ms must be a whole number (>= 1) of samples at fs_hz=30000"),
    ({"bin_ms": 20.01}, "got 20.01 (600.3 samples)"),
    ({"features": ("tx", "spikes")}, "features must be a non-empty sequence of distinct kinds from ('tx', 'sbp', 'lfp'); got ('tx', 'spikes')"),
    ({"features": "tx"}, "features must be a sequence of feature kinds from ('tx', 'sbp', 'lfp'); got the string 'tx'"),
    ({"features": ()}, "features must be a non-empty sequence"),
    ({"features": ("tx", "tx")}, "features must be a non-empty sequence of distinct kinds"),
    ({"features": ("tx", "lfp")}, "features contains 'lfp' but lfp_band_hz is None"),
    ({"lfp_band_hz": (300.0, 1.0)}, "lfp_band_hz must be a pair (low_hz, high_hz)"),
    ({"calibration_s": 0}, "calibration_s must be a finite number > 0; got 0"),
    ({"on_gap": "skip"}, "on_gap must be one of ('bridge', 'reset', 'raise'); got 'skip'"),
    ({"backend": "cuda"}, "backend must be one of ('numba', 'numpy'); got 'cuda'"),
    ({"dead_time_ms": -1.0}, "dead_time_ms must be a finite number >= 0; got -1.0"),
    ({"keep_events": "yes"}, "keep_events must be a bool; got 'yes'"),
    ({"trough_window_ms": -0.5}, "trough_window_ms must be a finite number >= 0; got -0.5"),
    ({"saturation_frac": 0.0}, "saturation_frac must be in (0, 1]; got 0.0"),
    ({"saturation_frac": 2.0}, "saturation_frac must be in [0.0, 1.0]; got 2.0"),
    ({"flat_rms_uv": -1.0}, "flat_rms_uv must be a finite number >= 0; got -1.0"),
    ({"lrr_ridge": "a"}, "lrr_ridge must be a number; got 'a'"),
])
def test_constructor_rejects_bad_parameters(kw, msg):
    fs = kw.pop("fs_hz", FS)
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FeatureExtractor(CM, fs, **kw)


def test_constructor_rejects_a_non_channel_map():
    with pytest.raises(ConfigError, match="channel_map must be a cortexlink.ChannelMap; got list"):
        FeatureExtractor(["ch0", "ch1"])


@pytest.fixture
def fx():
    return FeatureExtractor(CM, FS, calibration_s=0.02)


def test_step_rejects_bad_chunks(fx):
    with pytest.raises(ValidationError, match=re.escape("chunk must be a cortexlink.Chunk; got ndarray")):
        fx.step(np.zeros((10, 4), np.int16))
    with pytest.raises(ValidationError, match=re.escape("chunk.data must have dtype int16 (counts) or float32 (µV); got float64")):
        fx.step(Chunk(np.zeros((10, 4)), FS, 0))
    with pytest.raises(ValidationError, match="got int32"):
        fx.step(Chunk(np.zeros((10, 4), np.int32), FS, 0))
    with pytest.raises(ValidationError, match=re.escape("chunk.data must have 4 channels (columns, from the ChannelMap); got 5")):
        fx.step(Chunk(np.zeros((10, 5), np.int16), FS, 0))
    with pytest.raises(ValidationError, match=re.escape("chunk.fs_hz must equal fs_hz=30000; got 20000")):
        fx.step(Chunk(np.zeros((10, 4), np.int16), 20000.0, 0))
    with pytest.raises(ValidationError, match="data must have 2 dimensions; got 1"):
        fx.step(Chunk(np.zeros(10, np.int16), FS, 0))
    # nothing was consumed by the rejected chunks
    assert fx.n_samples_ == 0 and fx.step(Chunk(np.zeros((10, 4), np.int16), FS, 77)).n_bins == 0


def test_apply_and_calibrate_reject_bad_data(fx):
    with pytest.raises(ValidationError, match=re.escape("data must be a 2-D array (samples x channels); got ndim 1 (shape (10,))")):
        fx.apply(np.zeros(10, np.int16))
    with pytest.raises(ValidationError, match="got ndim 3"):
        fx.apply(np.zeros((2, 10, 4), np.int16))
    with pytest.raises(ValidationError, match="data must be a numpy array, a Chunk or an iterable of Chunks; got int"):
        fx.apply(5)
    with pytest.raises(ValidationError, match="data must hold at least 2 samples to calibrate; got 1"):
        fx.calibrate(np.zeros((1, 4), np.int16))
    with pytest.raises(ConfigError, match="chunk_size must be an? integer; got 2.5"):
        fx.apply(np.zeros((10, 4), np.int16), chunk_size=2.5)


def test_unfitted_and_missing_options_raise(fx):
    with pytest.raises(NotFittedError, match=r"not calibrated yet: stream at least calibration_s \(0.02 s\)"):
        fx.calibration_
    with pytest.raises(NotFittedError, match="events_ needs keep_events=True"):
        fx.events_
    with pytest.raises(NotFittedError, match="pop_events needs keep_events=True"):
        fx.pop_events()
    with pytest.raises(ValidationError, match="calibration must be a cortexlink.dsp.Calibration; got dict"):
        fx.set_calibration({})
    other = FeatureExtractor(ChannelMap.grid(3), FS, calibration_s=0.02)
    other.calibrate(np.random.default_rng(0).normal(0, 40, (600, 3)).astype(np.int16))
    with pytest.raises(ValidationError, match="calibration must be for 4 channels; got 3"):
        fx.set_calibration(other.calibration_)
    lrr = FeatureExtractor(ChannelMap.grid(3), FS, reference="lrr")
    with pytest.raises(ValidationError, match="calibration must hold an lrr_matrix when reference='lrr'; got None"):
        lrr.set_calibration(other.calibration_)


def test_helpers_validate_their_input():
    with pytest.raises(ValidationError, match="data must have dtype int16, float32; got float64"):
        scipy_chain(np.zeros((100, 4)))
    with pytest.raises(ValidationError, match="channel_map is required when data is not an array or a Chunk"):
        detect_crossings(iter([]))
