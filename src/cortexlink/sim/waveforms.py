"""Extracellular spike waveforms and artefact shapes for the simulated implant."""

from __future__ import annotations

import numpy as np

__all__ = ["PRE_TROUGH_MS", "POST_TROUGH_MS", "unit_templates", "artifact_shape"]

#: Template span before and after the negative peak (trough), in milliseconds.
PRE_TROUGH_MS = 0.4
POST_TROUGH_MS = 1.2


def template_geometry(fs_hz: float) -> tuple[int, int]:
    """Return ``(n_samples, trough_idx)`` of a unit template at ``fs_hz``."""
    pre = int(round(PRE_TROUGH_MS * 1e-3 * fs_hz))
    post = int(round(POST_TROUGH_MS * 1e-3 * fs_hz))
    return pre + post, pre


def _taper(n: int, n_in: int, n_out: int) -> np.ndarray:
    w = np.ones(n)
    if n_in > 0:
        w[:n_in] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n_in) + 0.5) / n_in)
    if n_out > 0:
        w[n - n_out:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(n_out) + 0.5) / n_out)
    return w


def unit_templates(rng: np.random.Generator, n_units: int, fs_hz: float) -> tuple[np.ndarray, int]:
    """Draw ``n_units`` distinct biphasic extracellular waveforms.

    Each waveform is a sharp negative trough (Gaussian, sigma 0.05-0.14 ms) followed by a slower
    positive repolarisation lobe (delay 0.18-0.6 ms, sigma 0.1-0.35 ms, 12-60 % of the trough),
    with an optional small positive pre-trough bump. About a quarter are narrow ("fast-spiking")
    shapes. Templates are tapered to zero at both ends, shifted so the sampled minimum is exactly
    at ``trough_idx``, and normalised to a trough of exactly -1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_units : int
        Number of templates.
    fs_hz : float
        Sampling rate.

    Returns
    -------
    templates : ndarray (n_units, n_samples), float64
        Unit-trough templates.
    trough_idx : int
        Index of the trough in each template.
    """
    n, pre = template_geometry(fs_hz)
    t_ms = (np.arange(n) - pre) / fs_hz * 1e3
    narrow = rng.random(n_units) < 0.25
    sig1 = np.where(narrow, rng.uniform(0.05, 0.08, n_units), rng.uniform(0.08, 0.14, n_units))
    tau = np.where(narrow, rng.uniform(0.18, 0.3, n_units), rng.uniform(0.3, 0.6, n_units))
    sig2 = np.where(narrow, rng.uniform(0.1, 0.18, n_units), rng.uniform(0.15, 0.35, n_units))
    r2 = np.where(narrow, rng.uniform(0.3, 0.6, n_units), rng.uniform(0.12, 0.45, n_units))
    r0 = rng.uniform(0.0, 0.12, n_units)
    tau0 = rng.uniform(0.15, 0.3, n_units)
    t = t_ms[None, :]
    w = (-np.exp(-t ** 2 / (2 * sig1[:, None] ** 2))
         + r2[:, None] * np.exp(-(t - tau[:, None]) ** 2 / (2 * sig2[:, None] ** 2))
         + r0[:, None] * np.exp(-(t + tau0[:, None]) ** 2 / (2 * 0.08 ** 2)))
    w *= _taper(n, max(1, pre // 4), max(1, int(round(0.3e-3 * fs_hz))))[None, :]
    out = np.zeros_like(w)
    for i in range(n_units):
        shift = pre - int(np.argmin(w[i]))
        if shift >= 0:
            out[i, shift:] = w[i, :n - shift]
        else:
            out[i, :n + shift] = w[i, -shift:]
        out[i] /= -out[i, pre]
    return out, pre


def artifact_shape(rng: np.random.Generator, fs_hz: float, duration_ms: float = 6.0) -> np.ndarray:
    """One artefact transient: fast rise (~0.1 ms), exponential decay (0.5-2 ms), peak +-1."""
    n = int(round(duration_ms * 1e-3 * fs_hz))
    t_ms = np.arange(n) / fs_hz * 1e3
    tau_d = rng.uniform(0.5, 2.0)
    s = (1.0 - np.exp(-t_ms / 0.1)) * np.exp(-t_ms / tau_d)
    s -= rng.uniform(0.0, 0.3) * (1.0 - np.exp(-t_ms / 0.5)) * np.exp(-t_ms / (2.5 * tau_d))  # undershoot
    s *= _taper(n, 0, max(1, n // 6))
    s /= np.max(np.abs(s))
    return s * (1.0 if rng.random() < 0.5 else -1.0)
