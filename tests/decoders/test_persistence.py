"""save -> load round trips (no pickle), schema version, and layout compatibility errors."""

import json
import zipfile

import numpy as np
import pytest

from cortexlink import ChannelMap, ValidationError
from cortexlink.core.types import BinnedFeatures
from cortexlink.decoders import (SCHEMA_VERSION, ClickDecoder, FeaturePreprocessor, GRUDecoder,
                                 IncompatibleDecoderError, KalmanFilter, ReFITKalmanFilter, WienerFilter,
                                 load)

N_CH = 20
NAMES = tuple(f"ch{i:04d}/sbp" for i in range(N_CH))


def _binned(X):
    return BinnedFeatures(X.astype(np.float32), np.arange(X.shape[0]) * 600, 600, 30000.0, NAMES)


DECODERS = [
    WienerFilter(n_lags=3),
    KalmanFilter(),
    KalmanFilter(steady_state=False),
    ReFITKalmanFilter(refit_dynamics=True),
    GRUDecoder(hidden_size=8, max_epochs=2, seq_len=16, batch_size=4),
    FeaturePreprocessor(smoothing="boxcar", smooth_bins=3, n_lags=2, channels=["ch0001", "ch0003/sbp"]),
]


@pytest.mark.parametrize("dec", DECODERS, ids=repr)
def test_round_trip(tmp_path, linear_data, dec):
    Xtr, ytr, Xte, _ = linear_data
    cmap = ChannelMap.grid(N_CH)
    if isinstance(dec, FeaturePreprocessor):
        dec.fit(_binned(Xtr), channel_map=cmap)
        ref = dec.transform(Xte)
    else:
        dec.fit(_binned(Xtr), ytr, channel_map=cmap)
        ref = dec.predict(Xte)
    path = dec.save(tmp_path / "model.cortexlink")
    assert path == tmp_path / "model.cortexlink" and path.exists()
    with np.load(path, allow_pickle=False) as npz:          # readable without pickle
        meta = json.loads(str(npz["__meta__"]))
    assert meta["schema_version"] == SCHEMA_VERSION and meta["class"] == type(dec).__name__
    assert meta["feature_names"] == list(NAMES) and ChannelMap.from_dict(meta["channel_map"]) == cmap
    back = load(path, expect_feature_names=NAMES, expect_channel_map=cmap)
    assert type(back) is type(dec)
    assert back.get_params() == dec.get_params()
    assert back.feature_names_ == NAMES and back.channel_map_ == cmap
    out = back.transform(Xte) if isinstance(dec, FeaturePreprocessor) else back.predict(Xte)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    back.reset_state()
    np.testing.assert_allclose(back.step(Xte[0]), ref[0], rtol=1e-5, atol=1e-5)


def test_click_round_trip(tmp_path, linear_data):
    Xtr, ytr, Xte, _ = linear_data
    y = (ytr[:, 0] > 0.5).astype(int)
    dec = ClickDecoder().fit(Xtr, y, feature_names=NAMES)
    back = load(dec.save(tmp_path / "click.npz"))
    np.testing.assert_array_equal(back.predict(Xte), dec.predict(Xte))
    np.testing.assert_allclose(back.predict_proba(Xte), dec.predict_proba(Xte))


def test_gru_loaded_steps_without_torch_weights_in_memory(tmp_path, linear_data):
    Xtr, ytr, Xte, _ = linear_data
    dec = GRUDecoder(hidden_size=8, max_epochs=1).fit(Xtr, ytr)
    back = load(dec.save(tmp_path / "g.npz"))
    assert set(back.weights_) == set(dec.weights_)
    for k in dec.weights_:
        np.testing.assert_array_equal(back.weights_[k], dec.weights_[k])


@pytest.fixture
def saved(tmp_path, linear_data):
    Xtr, ytr, _, _ = linear_data
    dec = KalmanFilter().fit(Xtr, ytr, feature_names=NAMES, channel_map=ChannelMap.grid(N_CH))
    return dec.save(tmp_path / "k.npz")


@pytest.mark.req("SR-30")
def test_load_rejects_other_feature_layout(saved):
    with pytest.raises(IncompatibleDecoderError, match=r"expects 20 features, data has 19"):
        load(saved, expect_feature_names=NAMES[:19])
    swapped = (NAMES[1], NAMES[0]) + NAMES[2:]
    with pytest.raises(IncompatibleDecoderError, match=r"another order.*column 0"):
        load(saved, expect_feature_names=swapped)
    renamed = NAMES[:5] + ("ch0099/sbp",) + NAMES[6:]
    with pytest.raises(IncompatibleDecoderError, match=r"column 5: expected 'ch0005/sbp', got 'ch0099/sbp'"):
        load(saved, expect_feature_names=renamed)
    with pytest.raises(IncompatibleDecoderError, match=r"expects 20 features per bin; the data has 96"):
        load(saved, expect_n_features=96)
    assert isinstance(IncompatibleDecoderError("x"), ValidationError)


@pytest.mark.req("SR-30")
def test_load_rejects_other_channel_map(saved):
    with pytest.raises(IncompatibleDecoderError, match=r"fitted on 20 channels.*data has 96"):
        load(saved, expect_channel_map=ChannelMap.grid(96))
    with pytest.raises(IncompatibleDecoderError, match=r"newly bad \['ch0003'\]"):
        load(saved, expect_channel_map=ChannelMap.grid(N_CH).with_bad([3]))


def test_predict_rejects_binned_features_with_other_names(saved, linear_data):
    dec = load(saved)
    X = linear_data[2]
    other = BinnedFeatures(X, np.arange(X.shape[0]), 1, 1000.0, tuple(f"u{i}" for i in range(N_CH)))
    with pytest.raises(IncompatibleDecoderError, match="feature layout differs"):
        dec.predict(other)


@pytest.mark.req("SR-30")
def test_load_rejects_newer_schema_and_foreign_files(tmp_path, saved):
    with np.load(saved, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    meta = json.loads(str(files["__meta__"]))
    meta["schema_version"] = SCHEMA_VERSION + 1
    files["__meta__"] = np.array(json.dumps(meta))
    newer = tmp_path / "newer.npz"
    with open(newer, "wb") as fh:
        np.savez(fh, **files)
    with pytest.raises(ValidationError, match=r"schema_version 2; this cortexlink reads 1..1"):
        load(newer)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValidationError, match="no __meta__ member"):
        load(plain)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValidationError, match="not a cortexlink decoder file"):
        load(junk)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_saved_file_has_no_pickled_members(saved):
    with zipfile.ZipFile(saved) as z:
        for name in z.namelist():
            with z.open(name) as fh:
                header = fh.read(128)
            assert b"'descr': '|O'" not in header, name


def test_check_compatible_method(linear_data):
    Xtr, ytr, _, _ = linear_data
    dec = WienerFilter(n_lags=1, alpha=1.0).fit(Xtr, ytr)       # fitted without names: counts only
    dec.check_compatible(feature_names=NAMES)
    with pytest.raises(IncompatibleDecoderError, match="expects 20 features per bin; got 3 feature names"):
        dec.check_compatible(feature_names=NAMES[:3])
