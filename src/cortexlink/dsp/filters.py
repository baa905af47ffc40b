"""Causal IIR filters as cascaded second-order sections (SOS), stateful across chunks.

The filters are *designed* with :func:`scipy.signal.butter` (``output="sos"``); the
filtering itself runs in cortexlink's own loop (a numba kernel, or
:func:`scipy.signal.sosfilt` for the numpy backend) so that state is carried from one
chunk to the next and every chunking gives the same output.

Start-up and non-finite samples
-------------------------------
A channel's filter state is initialised from the first finite sample it sees
(``init="step"``: the steady state for a constant input equal to that sample, i.e.
``scipy.signal.sosfilt_zi(sos) * x0``), which removes the start-up transient caused by
an electrode's DC offset. ``init="zero"`` starts from zero state as
:func:`scipy.signal.sosfilt` does by default.

A non-finite sample (NaN or Inf) gives a NaN output for that channel and sample, is
counted in ``n_nonfinite_samples_``, and resets that channel's state: the next finite
sample re-initialises it as above, so one bad sample never poisons the filter forever.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.validation import check_choice, check_positive

logger = logging.getLogger(__name__)

BACKENDS = ("numba", "numpy")


def check_band(name: str, band_hz: Any, fs_hz: float) -> tuple[float, float]:
    """Validate a ``(low_hz, high_hz)`` pass band against the Nyquist rate.

    Parameters
    ----------
    name : str
        Parameter name used in the error message.
    band_hz : sequence of two floats
        Pass band edges in Hz, ``0 < low_hz < high_hz < fs_hz / 2``.
    fs_hz : float
        Sampling rate in Hz.

    Returns
    -------
    (float, float)

    Raises
    ------
    ConfigError
        If the band is not two finite numbers with ``0 < low < high < fs_hz / 2``.
    """
    try:
        lo, hi = (float(v) for v in band_hz)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz < "
                          f"fs_hz/2 = {fs_hz / 2:g}; got {band_hz!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 < lo < hi < fs_hz / 2.0):
        raise ConfigError(f"{name} must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz < "
                          f"fs_hz/2 = {fs_hz / 2:g}; got {band_hz!r}")
    return lo, hi


def design_bandpass(fs_hz: float, band_hz: tuple[float, float], order: int) -> np.ndarray:
    """Design a Butterworth band-pass filter as second-order sections.

    Parameters
    ----------
    fs_hz : float
        Sampling rate in Hz.
    band_hz : (float, float)
        Pass band ``(low_hz, high_hz)``, ``0 < low_hz < high_hz < fs_hz / 2``.
    order : int
        Butterworth order ``N`` passed to :func:`scipy.signal.butter`; a band-pass of
        order ``N`` has ``2N`` poles and ``N`` second-order sections.

    Returns
    -------
    ndarray (N, 6), float64
        ``scipy.signal`` SOS layout ``[b0, b1, b2, a0=1, a1, a2]``.
    """
    from scipy import signal

    fs = check_positive("fs_hz", fs_hz)
    band = check_band("band_hz", band_hz, fs)
    n = check_positive("filter_order", order, integer=True)
    if n > 12:
        raise ConfigError(f"filter_order must be an integer in [1, 12]; got {order!r}")
    return signal.butter(n, band, btype="bandpass", output="sos", fs=fs)


def sos_state_init(sos: np.ndarray) -> np.ndarray:
    """Steady-state SOS delays for a unit step input (``scipy.signal.sosfilt_zi``), (S, 2)."""
    from scipy import signal

    return signal.sosfilt_zi(sos)


def sos_coefficients(sos: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Pack SOS rows ``[b0, b1, b2, 1, a1, a2]`` into the kernels' ``[b0, b1, b2, a1, a2]``."""
    sos = np.asarray(sos, dtype=np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6:
        raise ConfigError(f"sos must have shape (n_sections, 6); got {sos.shape}")
    if not np.allclose(sos[:, 3], 1.0):
        sos = sos / sos[:, 3:4]
    return np.ascontiguousarray(sos[:, [0, 1, 2, 4, 5]], dtype=dtype)


def pad_sections(coef: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append an identity section (``y = x``, exact in floating point) if the count is odd.

    The numba kernel runs the biquads two at a time.
    """
    if coef.shape[0] % 2 == 0:
        return coef, zi
    ident = np.zeros((1, 5), coef.dtype)
    ident[0, 0] = 1.0
    return (np.ascontiguousarray(np.vstack([coef, ident])),
            np.ascontiguousarray(np.vstack([zi, np.zeros((1, 2), zi.dtype)])))


class SOSFilter:
    """Stateful causal SOS filter for (samples x channels) float32 blocks.

    Parameters
    ----------
    sos : array (n_sections, 6)
        Second-order sections in :mod:`scipy.signal` layout (e.g. from
        :func:`design_bandpass`).
    n_channels : int
        Number of channels (columns) of the blocks to be filtered.
    init : {"step", "zero"}
        How a channel's state starts (and restarts after a non-finite sample): ``"step"``
        is the steady state for a constant input equal to the first finite sample, i.e.
        ``sosfilt(sos, x, zi=sosfilt_zi(sos) * x[0])``; ``"zero"`` matches
        ``sosfilt(sos, x)``.
    backend : {"numba", "numpy"}
        ``"numba"`` runs cortexlink's float32 kernel; ``"numpy"`` uses
        :func:`scipy.signal.sosfilt` on the finite runs of each channel.

    Attributes
    ----------
    n_nonfinite_samples_ : ndarray (n_channels,), int64
        Non-finite samples seen per channel since :meth:`reset`.

    Examples
    --------
    >>> import numpy as np
    >>> from cortexlink.dsp import SOSFilter, design_bandpass
    >>> f = SOSFilter(design_bandpass(30000.0, (250.0, 5000.0), 2), n_channels=4)
    >>> y = f.step(np.zeros((30, 4), np.float32))
    >>> y.shape
    (30, 4)
    """

    def __init__(self, sos: Any, n_channels: int, *, init: str = "step", backend: str = "numba") -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.n_channels = check_positive("n_channels", n_channels, integer=True)
        self.init = check_choice("init", init, ("step", "zero"))
        self.backend = check_choice("backend", backend, BACKENDS)
        self._coef = sos_coefficients(self.sos, np.float32)
        zi = sos_state_init(self.sos) if init == "step" else np.zeros((self._coef.shape[0], 2))
        self._coef, self._zi = pad_sections(self._coef, np.ascontiguousarray(zi, dtype=np.float32))
        self.reset()

    @property
    def n_sections(self) -> int:
        """Sections run (an identity section pads an odd count)."""
        return self._coef.shape[0]

    def reset(self) -> None:
        """Forget the filter state; the next finite sample of each channel re-initialises it."""
        c = self.n_channels
        self._z = np.zeros((self.n_sections, 2, c), np.float32)
        self._need_init = np.ones(c, np.int32)
        self._ist = np.zeros(16, np.int64)
        self._ist[7] = c
        self.n_nonfinite_samples_ = np.zeros(c, np.int64)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Filter one block (samples x channels), continuing from the current state.

        Parameters
        ----------
        x : ndarray (n_samples, n_channels), float32

        Returns
        -------
        ndarray (n_samples, n_channels), float32
        """
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValidationError(f"x must be a 2-D numpy array (samples x channels); got "
                                  f"{type(x).__name__} with ndim {getattr(x, 'ndim', None)}")
        if x.shape[1] != self.n_channels:
            raise ValidationError(f"x must have {self.n_channels} channels (columns); got {x.shape[1]}")
        if x.dtype != np.float32:
            raise ValidationError(f"x must have dtype float32; got {x.dtype}")
        x = np.ascontiguousarray(x)
        n = x.shape[0]
        out = np.empty_like(x)
        if n == 0:
            return out
        if self.backend == "numba":
            from cortexlink.dsp import _kernels as K

            ones = np.ones(self.n_channels, np.float32)
            zeros = np.zeros(self.n_channels, np.float32)
            K.filter_block(x, ones, zeros, self._coef, self._zi, self._z, self._need_init,
                           self.n_nonfinite_samples_, self._ist, out)
        else:
            from cortexlink.dsp import _numpy_engine as E

            out[:] = E.filter_block(x, self._coef, self._zi, self._z, self._need_init,
                                    self.n_nonfinite_samples_)
            self._ist[7] = int(self._need_init.sum())
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Reset, then filter the whole block (same as one :meth:`step`)."""
        self.reset()
        return self.step(x)
