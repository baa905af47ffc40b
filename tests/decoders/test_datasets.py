"""The monkey M1 loader maps the authors' swapped split names to unambiguous ones."""

import numpy as np
import pytest
from _shared_data import need
import scipy.io

from cortexlink import ValidationError
from cortexlink.decoders.datasets import load_monkey_m1


def test_load_real_folder(shared_data):
    folder = need(shared_data / "monkey_m1_center_out", "the monkey M1 data set")
    sessions = load_monkey_m1(folder)
    assert set(sessions) == {"chewie", "mihi"}
    c = sessions["chewie"]
    raw = scipy.io.loadmat(str(folder / "chewie_demo.mat"))
    np.testing.assert_array_equal(c.X_train, raw["Yte"])      # their "te" is the TRAINING split
    np.testing.assert_array_equal(c.y_train, raw["Xte"])
    np.testing.assert_array_equal(c.X_test, raw["Ytr"])
    assert c.X_train.shape == (1818, 71) and c.X_test.shape == (1200, 71) and c.same_units
    assert not sessions["mihi"].same_units                    # 187 vs 174 units, sorted separately
    Xa, ya, Xb, yb = sessions["mihi"].blocked_split(0.2)
    assert Xa.shape[0] + Xb.shape[0] == sessions["mihi"].X_train.shape[0]


def test_synthetic_file_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = {"Yte": rng.poisson(1, (30, 5)).astype(np.uint8), "Xte": rng.standard_normal((30, 2)),
            "Tte": np.ones((30, 1), np.uint8), "Ytr": rng.poisson(1, (20, 5)).astype(np.uint8),
            "Xtr": rng.standard_normal((20, 2)), "Ttr": np.zeros((20, 1), np.uint8)}
    scipy.io.savemat(tmp_path / "toy_demo.mat", good)
    s = load_monkey_m1(tmp_path / "toy_demo.mat")
    assert s.name == "toy" and s.X_train.shape == (30, 5) and s.target_test.shape == (20,)
    assert s.X_train.dtype == np.float64
    scipy.io.savemat(tmp_path / "bad_demo.mat", {"Yte": np.zeros((3, 2))})
    with pytest.raises(ValidationError, match=r"lacks \['Xte', 'Tte', 'Xtr', 'Ytr', 'Ttr'\]"):
        load_monkey_m1(tmp_path / "bad_demo.mat")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_monkey_m1(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*_demo.mat files"):
        load_monkey_m1(tmp_path / "empty")
