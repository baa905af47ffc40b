"""Parameters of :class:`~cortexlink.dsp.FeatureExtractor` as one frozen, validated object.

:class:`FeatureConfig` holds every parameter of the extractor except the channel map and
the sampling rate. Each field is checked when the config is built; the checks that need
the sampling rate (the bands below Nyquist, ``bin_ms`` a whole number of samples) are
made by the extractor, which knows it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

import numpy as np

from cortexlink.core.config import ConfigMixin
from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice, check_keys, check_positive, check_range
from cortexlink.dsp.filters import BACKENDS

__all__ = ["FeatureConfig", "FEATURE_KINDS", "REFERENCES", "GAP_POLICIES", "BACKENDS"]

FEATURE_KINDS = ("tx", "sbp", "lfp")
REFERENCES = ("car", "lrr", "none")
GAP_POLICIES = ("bridge", "reset", "raise")


def _check_pair(name: str, value: Any) -> tuple[float, float]:
    """A pass band ``(low_hz, high_hz)`` with ``0 < low_hz < high_hz`` (Nyquist is checked later)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 < lo < hi):
        raise ConfigError(f"{name} must be a pair (low_hz, high_hz) with 0 < low_hz < high_hz; got {value!r}")
    return lo, hi


def _check_features(features: Any, lfp_band_hz: Any) -> tuple[str, ...]:
    """Distinct kinds from FEATURE_KINDS, with "lfp" added when an LFP band is given, in canonical order."""
    if isinstance(features, str):
        raise ConfigError(f"features must be a sequence of feature kinds from {FEATURE_KINDS}; "
                          f"got the string {features!r}")
    try:
        feats = tuple(features)
    except TypeError:
        raise ConfigError(f"features must be a sequence of feature kinds from {FEATURE_KINDS}; "
                          f"got {features!r}") from None
    if not feats or any(f not in FEATURE_KINDS for f in feats) or len(set(feats)) != len(feats):
        raise ConfigError(f"features must be a non-empty sequence of distinct kinds from "
                          f"{FEATURE_KINDS}; got {features!r}")
    if lfp_band_hz is None and "lfp" in feats:
        raise ConfigError("features contains 'lfp' but lfp_band_hz is None; give lfp_band_hz, "
                          "e.g. (1.0, 300.0)")
    if lfp_band_hz is not None:
        feats = feats + ("lfp",)
    return tuple(k for k in FEATURE_KINDS if k in feats)


@dataclasses.dataclass(frozen=True)
class FeatureConfig(ConfigMixin):
    """Validated parameters of a :class:`~cortexlink.dsp.FeatureExtractor`.

    Every field is checked when the config is built; an invalid value raises
    :class:`~cortexlink.ConfigError` naming the field, what is allowed and the value
    received. Values are normalised: numbers to ``float``/``int``/``bool``, bands to
    tuples of floats, ``features`` to the canonical order ``("tx", "sbp", "lfp")`` with
    ``"lfp"`` added when ``lfp_band_hz`` is given. :meth:`replace` derives a validated
    copy, :meth:`to_dict` / :meth:`from_dict` convert to and from plain dicts (the
    ``dsp`` section of a session manifest).

    Parameters
    ----------
    band_hz : (float, float)
        Spike band, ``0 < low < high`` (and ``high < fs_hz / 2``, checked by the extractor).
    filter_order : int
        Butterworth order N of the band-pass (N second-order sections, 2N poles), 1 to 12.
    reference : {"car", "lrr", "none"}
    threshold_rms : float
        Crossing threshold in units of noise RMS; must be negative.
    bin_ms : float
        Bin width, > 0 (a whole number of samples at the extractor's ``fs_hz``).
    features : sequence of {"tx", "sbp", "lfp"}
        Feature kinds to output (``"lfp"`` is added when ``lfp_band_hz`` is given).
    lfp_band_hz : (float, float) or None
        LFP band, e.g. ``(1, 300)``.
    calibration_s : float
        Length of the calibration window (auto-calibration and ``recalibrate``), > 0.
    on_gap : {"bridge", "reset", "raise"}
    backend : {"numba", "numpy"}
    dead_time_ms : float
        Minimum interval between two crossings counted on a channel, >= 0.
    keep_events : bool
        Keep every crossing event.
    trough_window_ms : float
        Window, starting at the crossing sample, searched for the trough, >= 0.
    flat_rms_uv : float
        Channels whose filtered robust RMS is below this are flat, >= 0.
    saturation_frac : float
        Fraction of samples at one extreme value that makes a channel saturated, in (0, 1].
    lrr_ridge : float
        Ridge regularisation of the LRR fit, relative to the mean channel variance, >= 0.
    n_threads : int
        Threads of the numba backend: 1 (default) runs the chain on the calling thread; N > 1
        splits the channels into N parts processed in parallel (numba threads, the GIL
        released), with features, masks and events identical to one thread's; 0 means one
        per CPU core. The numpy backend ignores it.

    Examples
    --------
    >>> from cortexlink.dsp import FeatureConfig
    >>> cfg = FeatureConfig(bin_ms=10.0, reference="lrr")
    >>> cfg.replace(threshold_rms=-4.0).threshold_rms
    -4.0
    >>> FeatureConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    band_hz: tuple[float, float] = (250.0, 5000.0)
    filter_order: int = 2
    reference: str = "car"
    threshold_rms: float = -4.5
    bin_ms: float = 20.0
    features: tuple[str, ...] = ("tx", "sbp")
    lfp_band_hz: tuple[float, float] | None = None
    calibration_s: float = 1.0
    on_gap: str = "bridge"
    backend: str = "numba"
    dead_time_ms: float = 1.5
    keep_events: bool = False
    trough_window_ms: float = 0.5
    flat_rms_uv: float = 0.5
    saturation_frac: float = 0.002
    lrr_ridge: float = 1e-3
    n_threads: int = 1

    def __post_init__(self) -> None:
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        s("band_hz", _check_pair("band_hz", self.band_hz))
        fo = self.filter_order
        if isinstance(fo, bool) or not isinstance(fo, numbers.Integral) or not 1 <= fo <= 12:
            raise ConfigError(f"filter_order must be an integer in [1, 12]; got {fo!r}")
        s("filter_order", int(fo))
        check_choice("reference", self.reference, REFERENCES)
        thr = check_range("threshold_rms", self.threshold_rms)
        if thr >= 0:
            raise ConfigError(f"threshold_rms must be a negative number (negative-going crossings, "
                              f"e.g. -4.5); got {self.threshold_rms!r}")
        s("threshold_rms", thr)
        s("bin_ms", check_positive("bin_ms", self.bin_ms))
        lfp = self.lfp_band_hz
        s("features", _check_features(self.features, lfp))
        s("lfp_band_hz", None if lfp is None else _check_pair("lfp_band_hz", lfp))
        s("calibration_s", check_positive("calibration_s", self.calibration_s))
        check_choice("on_gap", self.on_gap, GAP_POLICIES)
        check_choice("backend", self.backend, BACKENDS)
        s("dead_time_ms", check_positive("dead_time_ms", self.dead_time_ms, allow_zero=True))
        if not isinstance(self.keep_events, (bool, np.bool_)):
            raise ConfigError(f"keep_events must be a bool; got {self.keep_events!r}")
        s("keep_events", bool(self.keep_events))
        s("trough_window_ms", check_positive("trough_window_ms", self.trough_window_ms, allow_zero=True))
        s("flat_rms_uv", check_positive("flat_rms_uv", self.flat_rms_uv, allow_zero=True))
        sat = check_range("saturation_frac", self.saturation_frac, 0.0, 1.0)
        if sat == 0:
            raise ConfigError(f"saturation_frac must be in (0, 1]; got {self.saturation_frac!r}")
        s("saturation_frac", sat)
        s("lrr_ridge", check_positive("lrr_ridge", self.lrr_ridge, allow_zero=True))
        nt = self.n_threads
        if isinstance(nt, bool) or not isinstance(nt, numbers.Integral) or not 0 <= nt <= 1024:
            raise ConfigError(f"n_threads must be an integer in [0, 1024] (0: one per CPU core); got {nt!r}")
        s("n_threads", int(nt))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, path: str = "FeatureConfig") -> "FeatureConfig":
        """Build a config from a plain dict (e.g. :meth:`to_dict`'s or a manifest's ``dsp`` section).

        Missing keys take their defaults; lists are accepted where tuples are expected.

        Raises
        ------
        ConfigError
            For keys that are not fields (named in the message, with ``path``) or invalid values.
        """
        d = dict(d or {})
        check_keys(path, d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)
