import dataclasses
import json
import re

import numpy as np
import pytest

from cortexlink import ChannelMap, ConfigError
from cortexlink.dsp import FeatureConfig, FeatureExtractor, ReferenceFeatureExtractor

FS = 30000.0
CM = ChannelMap.grid(4)


@pytest.mark.parametrize("kw, msg", [
    ({"band_hz": 300}, "band_hz must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz; got 300"),
    ({"band_hz": (5000.0, 250.0)}, "band_hz must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz; "
                                   "got (5000.0, 250.0)"),
    ({"band_hz": ("a", 1.0)}, "band_hz must be a pair"),
    ({"filter_order": 13}, "filter_order must be an integer in [1, 12]; got 13"),
    ({"filter_order": 2.0}, "filter_order must be an integer in [1, 12]; got 2.0"),
    ({"reference": "avg"}, "reference must be one of ('car', 'lrr', 'none'); got 'avg'"),
    ({"threshold_rms": 0.0}, "threshold_rms must be a negative number (negative-going crossings, e.g. -4.5); got 0.0"),
    ({"threshold_rms": "-4"}, "threshold_rms must be a finite number; got '-4'"),
    ({"bin_ms": 0}, "bin_ms must be a finite number > 0; got 0"),
    ({"bin_ms": None}, "bin_ms must be a number; got None (NoneType)"),
    ({"features": "sbp"}, "features must be a sequence of feature kinds from ('tx', 'sbp', 'lfp'); got the string 'sbp'"),
    ({"features": ("tx", "spikes")}, "features must be a non-empty sequence of distinct kinds from "
                                     "('tx', 'sbp', 'lfp'); got ('tx', 'spikes')"),
    ({"features": ("lfp",)}, "features contains 'lfp' but lfp_band_hz is None"),
    ({"lfp_band_hz": (300.0, 1.0)}, "lfp_band_hz must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz; "
                                    "got (300.0, 1.0)"),
    ({"calibration_s": -1.0}, "calibration_s must be a finite number > 0; got -1.0"),
    ({"on_gap": "skip"}, "on_gap must be one of ('bridge', 'reset', 'raise'); got 'skip'"),
    ({"backend": "cuda"}, "backend must be one of ('numba', 'numpy'); got 'cuda'"),
    ({"dead_time_ms": float("inf")}, "dead_time_ms must be a finite number >= 0; got inf"),
    ({"keep_events": 1}, "keep_events must be a bool; got 1"),
    ({"trough_window_ms": -0.1}, "trough_window_ms must be a finite number >= 0; got -0.1"),
    ({"flat_rms_uv": True}, "flat_rms_uv must be a number; got True (bool)"),
    ({"saturation_frac": 0}, "saturation_frac must be in (0, 1]; got 0"),
    ({"saturation_frac": 1.5}, "saturation_frac must be in [0.0, 1.0]; got 1.5"),
    ({"lrr_ridge": -1e-3}, "lrr_ridge must be a finite number >= 0; got -0.001"),
])
def test_config_refuses_bad_values_naming_the_field(kw, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FeatureConfig(**kw)
    # the same through replace() and through the extractor's keyword form
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FeatureConfig().replace(**kw)
    with pytest.raises(ConfigError, match=re.escape(msg)):
        FeatureExtractor(CM, FS, **kw)


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        FeatureConfig(reference="avg")


def test_config_is_frozen_hashable_and_normalised():
    cfg = FeatureConfig(band_hz=[300, 6000], filter_order=np.int64(3), threshold_rms=-4,
                        features=["sbp", "tx"], lfp_band_hz=[1, 300], keep_events=np.bool_(True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bin_ms = 10.0
    assert hash(cfg) == hash(FeatureConfig.from_dict(cfg.to_dict()))
    assert cfg.band_hz == (300.0, 6000.0) and type(cfg.band_hz[0]) is float
    assert cfg.filter_order == 3 and type(cfg.filter_order) is int
    assert cfg.threshold_rms == -4.0 and type(cfg.threshold_rms) is float
    assert cfg.features == ("tx", "sbp", "lfp")       # canonical order, "lfp" added for lfp_band_hz
    assert cfg.lfp_band_hz == (1.0, 300.0)
    assert cfg.keep_events is True


def test_to_dict_from_dict_round_trip_including_json():
    cfg = FeatureConfig(band_hz=(300.0, 6000.0), filter_order=3, reference="lrr", threshold_rms=-4.0,
                        bin_ms=10.0, features=("sbp",), lfp_band_hz=(1.0, 300.0), calibration_s=0.5,
                        on_gap="reset", backend="numpy", dead_time_ms=1.0, keep_events=True,
                        trough_window_ms=0.3, flat_rms_uv=0.2, saturation_frac=0.01, lrr_ridge=1e-2)
    d = cfg.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(FeatureConfig)]
    assert FeatureConfig.from_dict(d) == cfg
    assert FeatureConfig.from_dict(json.loads(json.dumps(d))) == cfg   # lists back to tuples
    assert FeatureConfig.from_dict({}) == FeatureConfig() == FeatureConfig.from_dict(None)
    assert FeatureConfig.from_dict({"bin_ms": 10.0}) == FeatureConfig(bin_ms=10.0)


def test_from_dict_and_replace_refuse_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match=re.escape("FeatureConfig has unknown key(s) ['bin_size', 'fs_hz']")):
        FeatureConfig.from_dict({"bin_ms": 20.0, "bin_size": 5, "fs_hz": FS})
    with pytest.raises(ConfigError, match=re.escape("dsp has unknown key(s) ['thresh']; allowed: ['backend'")):
        FeatureConfig.from_dict({"thresh": -4.0}, "dsp")
    with pytest.raises(ConfigError, match=re.escape("FeatureConfig has no field(s) ['thresh']")):
        FeatureConfig().replace(thresh=-4.0)
    with pytest.raises(ConfigError, match=re.escape("FeatureConfig has no field(s) ['thresh']")):
        FeatureExtractor(CM, FS, thresh=-4.0)
    with pytest.raises(ConfigError, match=re.escape("config has unknown key(s) ['thresh']")):
        FeatureExtractor(CM, FS, {"thresh": -4.0})


def test_replace_returns_a_validated_copy():
    cfg = FeatureConfig()
    new = cfg.replace(bin_ms=10.0, reference="none")
    assert (new.bin_ms, new.reference) == (10.0, "none")
    assert cfg == FeatureConfig()
    with pytest.raises(ConfigError, match="features contains 'lfp' but lfp_band_hz is None"):
        FeatureConfig(lfp_band_hz=(1.0, 300.0)).replace(lfp_band_hz=None)


def test_extractor_rejects_a_config_of_the_wrong_type():
    with pytest.raises(ConfigError, match=re.escape("config must be a cortexlink.dsp.FeatureConfig, a dict or None; "
                                                    "got str")):
        FeatureExtractor(CM, FS, "car")


def test_checks_that_need_fs_are_made_by_the_extractor():
    cfg = FeatureConfig(bin_ms=20.01, band_hz=(250.0, 5000.0))   # valid without a sampling rate
    with pytest.raises(ConfigError, match=re.escape("bin_ms must be a whole number (>= 1) of samples at fs_hz=30000")):
        FeatureExtractor(CM, FS, cfg)
    with pytest.raises(ConfigError, match=re.escape("band_hz must be a pair (low_hz, high_hz) with 0 < low_hz < "
                                                    "high_hz < fs_hz/2 = 4000")):
        FeatureExtractor(CM, 8000.0, FeatureConfig(bin_ms=20.0))


def test_keyword_form_equals_config_form(signal, same_features):
    kw = dict(bin_ms=10.0, threshold_rms=-4.0, reference="lrr", calibration_s=0.1, keep_events=True,
              lfp_band_hz=(1.0, 300.0))
    data, cmap, _ = signal(8, 6000)
    old = FeatureExtractor(cmap, FS, **kw)
    ref, ref_events = old.apply(data), old.events_
    cfg = FeatureConfig(**kw)
    for new in (FeatureExtractor(cmap, FS, cfg), FeatureExtractor(cmap, FS, config=cfg),
                FeatureExtractor(cmap, FS, cfg.to_dict()),
                FeatureExtractor(cmap, FS, FeatureConfig(bin_ms=20.0), **{**kw, "bin_ms": 10.0})):
        assert new.config == old.config == cfg
        assert new.get_params().keys() == old.get_params().keys()
        same_features(new.apply(data, chunk_size=250), ref, exact=True)
        np.testing.assert_array_equal(new.events_.sample_idx, ref_events.sample_idx)
        np.testing.assert_array_equal(new.events_.trough_uv, ref_events.trough_uv)


def test_overrides_replace_fields_of_the_config():
    fx = FeatureExtractor(CM, FS, FeatureConfig(bin_ms=10.0, reference="none"), reference="car",
                          calibration_s=0.02)
    assert (fx.config.bin_ms, fx.config.reference, fx.config.calibration_s) == (10.0, "car", 0.02)
    assert (fx.bin_ms, fx.reference, fx.bin_width_samples) == (10.0, "car", 300)
    ref = ReferenceFeatureExtractor(CM, FS, FeatureConfig(bin_ms=10.0))
    assert ref.config.backend == "numpy" and ref.config.bin_ms == 10.0


def test_get_params_is_channel_map_fs_and_the_config_dict():
    fx = FeatureExtractor(CM, FS, bin_ms=10.0, lfp_band_hz=(1.0, 300.0))
    p = fx.get_params()
    assert list(p) == ["channel_map", "fs_hz"] + [f.name for f in dataclasses.fields(FeatureConfig)]
    assert p["channel_map"] is CM and p["fs_hz"] == FS
    assert {k: v for k, v in p.items() if k not in ("channel_map", "fs_hz")} == fx.config.to_dict()
    assert p["features"] == ("tx", "sbp", "lfp")
    # what a session manifest stores (JSON, fs_hz dropped) rebuilds the same extractor
    dsp = json.loads(json.dumps({k: v for k, v in p.items() if k not in ("channel_map", "fs_hz")}))
    assert FeatureExtractor(CM, FS, **dsp).config == fx.config
    assert FeatureExtractor(**p).config == fx.config
