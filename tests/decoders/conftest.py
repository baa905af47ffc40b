"""Synthetic decoding data shared by the decoder tests."""

import numpy as np
import pytest
from scipy.signal import lfilter


def make_linear_data(n=1500, n_features=20, n_outputs=2, noise=0.5, seed=0):
    """Smooth velocities (AR(1)) and features linearly tuned to them plus noise."""
    rng = np.random.default_rng(seed)
    v = lfilter([1.0], [1.0, -0.95], rng.standard_normal((n, n_outputs)), axis=0)
    tuning = rng.standard_normal((n_outputs, n_features))
    X = 3.0 + v @ tuning + noise * rng.standard_normal((n, n_features))
    return X, v


@pytest.fixture(scope="session")
def linear_data_factory():
    """``make_linear_data`` as a fixture (test modules cannot import a conftest by name)."""
    return make_linear_data


@pytest.fixture(scope="session")
def linear_data():
    X, y = make_linear_data()
    return X[:1000], y[:1000], X[1000:], y[1000:]
