"""Synthetic test signals for the dsp tests (noise + injected spikes; no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink import ChannelMap

FS = 30000.0


def make_signal(n_channels: int = 16, n_samples: int = 15000, *, seed: int = 0, noise_uv: float = 10.0,
                spike_uv: float = 150.0, rate_hz: float = 20.0, gain_uv: float = 0.25,
                offset_uv: float = 0.0, common_uv: float = 0.0, dtype=np.int16):
    """Gaussian noise + one unit per channel with a biphasic spike (trough at the returned samples).

    Returns (data, channel_map, spikes): data int16 counts (gain ``gain_uv``) or float32 µV,
    ``spikes[c]`` the trough samples injected on channel ``c``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, noise_uv, (n_samples, n_channels))
    if common_uv:
        x += common_uv * rng.normal(0.0, 1.0, (n_samples, 1))
    t_ms = np.arange(-12, 36) / FS * 1e3
    tmpl = -np.exp(-t_ms ** 2 / (2 * 0.1 ** 2)) + 0.35 * np.exp(-(t_ms - 0.45) ** 2 / (2 * 0.2 ** 2))
    tmpl = spike_uv * tmpl / -tmpl.min()
    spikes = []
    for c in range(n_channels):
        n = rng.poisson(rate_hz * n_samples / FS)
        s = np.sort(rng.integers(20, n_samples - 60, n))
        s = s[np.r_[True, np.diff(s) > 90]] if s.size else s
        for t0 in s:
            x[t0 - 12:t0 + 36, c] += tmpl
        spikes.append(s)
    x += offset_uv
    if dtype == np.int16:
        data = np.clip(np.round(x / gain_uv), -32768, 32767).astype(np.int16)
        cmap = ChannelMap([f"ch{i:04d}" for i in range(n_channels)], gain_uv=gain_uv)
    else:
        data = x.astype(np.float32)
        cmap = ChannelMap([f"ch{i:04d}" for i in range(n_channels)])
    return data, cmap, spikes


@pytest.fixture
def signal():
    """The :func:`make_signal` factory."""
    return make_signal


def assert_same_features(a, b, *, exact: bool = True, rtol: float = 1e-5) -> None:
    """Same bins, masks and feature values (tx exact; floats exact or to ``rtol``)."""
    assert a.feature_names == b.feature_names
    np.testing.assert_array_equal(a.bin_start_samples, b.bin_start_samples)
    np.testing.assert_array_equal(a.valid, b.valid)
    assert a.gaps == b.gaps
    if exact:
        np.testing.assert_array_equal(a.data, b.data)
        return
    tx = np.array([n.endswith("/tx") for n in a.feature_names])
    np.testing.assert_array_equal(a.data[:, tx], b.data[:, tx])
    np.testing.assert_allclose(a.data[:, ~tx], b.data[:, ~tx], rtol=rtol, atol=1e-6, equal_nan=True)


@pytest.fixture
def same_features():
    """The :func:`assert_same_features` helper."""
    return assert_same_features
