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



def _rewrite(src, dst, arrays=None, scalars=None, params=None):
    """``src``'s members, some replaced, written to ``dst`` as ``save`` writes them."""
    with np.load(src, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    meta = json.loads(str(files["__meta__"]))
    meta["scalars"].update(scalars or {})
    meta["params"].update(params or {})
    files.update(arrays or {})
    files["__meta__"] = np.array(json.dumps(meta))
    with open(dst, "wb") as fh:
        np.savez(fh, **files)
    return dst


def _kalman_damage(a, f):
    nan = a["A_"].copy()
    nan[0, 0] = np.nan
    return [({"A_": nan}, {}, {}, r"A_ holds 1 NaN/Inf"),
            ({"K_": np.where(a["K_"] > 0, np.inf, a["K_"])}, {}, {}, r"K_ holds \d+ NaN/Inf"),
            ({"A_": np.zeros((3, 3))}, {}, {}, r"A_ has shape \(3, 3\); expected \(2, 2\) \(n_features_in_=20, n_outputs_=2\)"),
            ({"C_": a["C_"][:f - 1]}, {}, {}, r"C_ has shape \(19, 2\); expected \(20, 2\)"),
            ({}, {"process_noise_scale_": float("nan")}, {}, r"process_noise_scale_ is nan"),
            ({}, {"n_outputs_": 3}, {}, r"A_ has shape \(2, 2\); expected \(3, 3\)"),
            ({}, {}, {"tol": float("nan")}, r"tol must be a finite number")]


def _wiener_damage(a, f):
    return [({"coef_": a["coef_"] * np.nan}, {}, {}, r"coef_ holds \d+ NaN/Inf"),
            ({"coef_": a["coef_"][:2]}, {}, {}, r"coef_ has shape \(2, 20, 2\); expected \(3, 20, 2\)"),
            ({"x_scale_": a["x_scale_"][:5]}, {}, {}, r"x_scale_ has shape \(5,\); expected \(20,\)")]


def _click_damage(a, f):
    return [({"coef_": np.append(a["coef_"], 1.0)}, {}, {}, r"coef_ has shape \(21,\); expected \(20,\)"),
            ({}, {"intercept_": float("inf")}, {}, r"intercept_ is inf"),
            ({"transition_": np.full((2, 2), np.nan)}, {}, {}, r"transition_ holds 4 NaN/Inf")]


def _gru_damage(a, f):
    w = a["extra/w/readout.weight"]
    return [({"extra/w/readout.weight": w * np.nan}, {}, {}, r"w/readout.weight holds \d+ NaN/Inf"),
            ({"extra/w/readout.weight": w[:, :4]}, {}, {}, r"readout.weight has shape \(2, 4\); expected \(2, 8\)")]


def _prep_damage(a, f):
    return [({"selected_idx_": a["selected_idx_"] + f}, {}, {}, r"selected_idx_ must list column indices in \[0, 20\)"),
            ({"mean_": a["mean_"][:1]}, {}, {}, r"mean_ has shape \(1,\); expected \(2,\)")]


@pytest.mark.req("SR-30")
@pytest.mark.parametrize("dec, damage", [
    (KalmanFilter(), _kalman_damage), (ReFITKalmanFilter(), _kalman_damage), (WienerFilter(n_lags=3), _wiener_damage),
    (ClickDecoder(), _click_damage), (GRUDecoder(hidden_size=8, max_epochs=1), _gru_damage),
    (FeaturePreprocessor(channels=[1, 3]), _prep_damage)], ids=["kalman", "refit", "wiener", "click", "gru", "prep"])
def test_load_refuses_nonfinite_parameters_and_inconsistent_shapes(tmp_path, linear_data, dec, damage):
    """A file whose parameters hold NaN/Inf, or whose arrays disagree in shape with each other or
    with the feature count, is refused at load with a ValidationError naming the array; the same
    file rewritten unchanged loads and computes exactly what the fitted decoder does."""
    Xtr, ytr, Xte, _ = linear_data
    if isinstance(dec, FeaturePreprocessor):
        dec.fit(Xtr)
    else:
        dec.fit(Xtr, (ytr[:, 0] > 0.5).astype(int) if isinstance(dec, ClickDecoder) else ytr)
    run = dec.transform if isinstance(dec, FeaturePreprocessor) else dec.predict
    path = dec.save(tmp_path / "d.npz")
    same = load(_rewrite(path, tmp_path / "same.npz"))
    np.testing.assert_array_equal((same.transform if isinstance(dec, FeaturePreprocessor) else same.predict)(Xte),
                                  run(Xte))
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for i, (arr, scal, params, msg) in enumerate(damage(arrays, Xtr.shape[1])):
        bad = _rewrite(path, tmp_path / f"bad{i}.npz", arr, scal, params)
        with pytest.raises(ValidationError, match=rf"bad{i}\.npz holds a {type(dec).__name__} that cannot be used: .*{msg}"):
            load(bad)

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
