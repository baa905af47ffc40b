"""Auditory encoder: continuous interleaved sampling (CIS), audio → interleaved pulse trains.

The strategy (Wilson et al. 1991, the basis of most cochlear-implant processors): a band-pass
filter bank splits the audio into ``n_channels`` bands (log- or Greenwood-spaced between
``f_lo_hz`` and ``f_hi_hz``); each band's envelope is taken by full-wave rectification and a
low-pass filter; the envelope level in dB is mapped linearly between a base level and a
saturation level onto the electrode's ``[threshold_ua, comfort_ua]`` range; and each channel
drives one electrode with a fixed-rate train of biphasic pulses whose amplitudes follow it.

Choices made here (each is a documented convention, not a hidden one):

* Audio is float, full scale ±1 (0 dBFS = an envelope of 1). The envelope is scaled by π/2 so
  that a sine of amplitude A gives an envelope of about A.
* Channel 0 is the lowest band and drives ``electrodes[0]``.
* Frames: frame ``k`` starts ``k / rate_hz`` after the stream's first sample. Within a frame the
  firing channels take staggered sub-slots of ``1 / (rate_hz · n_slots)`` in ascending channel
  order (``n_slots`` = ``n_of_m`` or ``n_channels``), so no two pulses overlap in time
  (:class:`CISConfig` refuses a pulse longer than its slot).
* Every channel is sampled at its frame's first audio sample (the last sample at or before the
  frame start); n-of-m picks the ``n_of_m`` largest envelopes of that frame.
* A channel whose envelope is below the base level gives **no pulse** in that frame (not a
  threshold-level pulse): silence means no stimulation.
* A pulse belongs to the block whose audio sample contains its onset, so concatenated streaming
  plans equal the offline :meth:`CISEncoder.encode` exactly, whatever the block size. The plan
  of a block covers ``[t_start_s, t_start_s + len / fs_hz)``, extended to the end of its last
  pulse when that pulse runs past the block (by less than one pulse, 2 · width + gap), because
  the interlock accepts only pulses that lie whole inside their plan's window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim._checks import number, per_item
from cortexlink.stim.model import StimPlan, biphasic, empty_pulses, pulse_end_s

__all__ = ["CISConfig", "CISEncoder", "band_edges_hz", "greenwood_hz", "greenwood_position"]

_SPACINGS = ("log", "greenwood")
_RECT_GAIN = math.pi / 2.0      # mean of |sin| is 2/π: a sine of amplitude A → envelope ≈ A
_TINY = 1e-12


def greenwood_hz(position: Any) -> np.ndarray:
    """Human Greenwood map (1990): best frequency (Hz) at relative cochlear position 0 (apex)…1 (base).

    ``f = 165.4 · (10^(2.1·x) − 0.88)``.
    """
    return 165.4 * (10.0 ** (2.1 * np.asarray(position, float)) - 0.88)


def greenwood_position(freq_hz: Any) -> np.ndarray:
    """Inverse of :func:`greenwood_hz`: relative cochlear position of a frequency."""
    return np.log10(np.asarray(freq_hz, float) / 165.4 + 0.88) / 2.1


def band_edges_hz(n_channels: int, f_lo_hz: float, f_hi_hz: float, spacing: str = "log") -> np.ndarray:
    """``n_channels + 1`` band edges from ``f_lo_hz`` to ``f_hi_hz``, log- or Greenwood-spaced."""
    if spacing == "log":
        return np.geomspace(f_lo_hz, f_hi_hz, n_channels + 1)
    x = np.linspace(greenwood_position(f_lo_hz), greenwood_position(f_hi_hz), n_channels + 1)
    edges = greenwood_hz(x)
    edges[0], edges[-1] = f_lo_hz, f_hi_hz       # exact ends despite round-off
    return edges


def _number(name: str, value: Any, **kw: Any) -> float:
    return number("CISConfig", name, value, **kw)


def _per_channel(name: str, value: Any, n: int) -> np.ndarray:
    return per_item("CISConfig", name, value, n, "channel")


@dataclasses.dataclass(frozen=True)
class CISConfig:
    """Parameters of the CIS strategy (validated on construction).

    Parameters
    ----------
    n_channels : int
        Number of analysis bands = electrodes driven (1–64; 4–22 in practice).
    rate_hz : float
        Pulses per second per channel (the frame rate).
    f_lo_hz, f_hi_hz : float
        Lower edge of the first band and upper edge of the last (``f_hi_hz < fs_hz / 2``).
    spacing : {"log", "greenwood"}
        Band edges equally spaced in log frequency or in position on the human cochlea.
    envelope_cutoff_hz : float
        Cut-off of the envelope low-pass (below ``fs_hz / 2``; usually ≤ ``rate_hz / 2``).
    n_of_m : int or None
        None: every channel fires every frame (CIS). An int: only the ``n_of_m`` largest
        envelopes of each frame fire (n-of-m / ACE-like).
    width_us, gap_us : float
        Phase width and interphase gap of the symmetric biphasic pulses.
    threshold_ua, comfort_ua : float or sequence of float
        Per-channel threshold (T) and comfort (C) levels; a scalar applies to every channel.
        Defaults are ICMS-scale examples, not cochlear (mA) values.
    base_level_db, saturation_db : float
        Envelope levels (dB re full scale 1.0) mapped onto T and C; the map is linear in dB
        (logarithmic in envelope). Below the base level a channel does not fire.
    electrodes : sequence of int or None
        Electrode id per channel (default ``range(n_channels)``).
    fs_hz : float
        Sampling rate of the audio given to the encoder.
    filter_order : int
        Butterworth order of each band-pass prototype (the band-pass has twice that order).
    cathodic_first : bool
        Polarity of the first phase.

    Raises
    ------
    ConfigError
        Naming the field, what is allowed and what was given.
    """

    n_channels: int = 12
    rate_hz: float = 900.0
    f_lo_hz: float = 200.0
    f_hi_hz: float = 7000.0
    spacing: str = "log"
    envelope_cutoff_hz: float = 200.0
    n_of_m: int | None = None
    width_us: float = 40.0
    gap_us: float = 8.0
    threshold_ua: Any = 20.0
    comfort_ua: Any = 80.0
    base_level_db: float = -60.0
    saturation_db: float = -10.0
    electrodes: Sequence[int] | None = None
    fs_hz: float = 16000.0
    filter_order: int = 3
    cathodic_first: bool = True

    def __post_init__(self) -> None:
        n = self.n_channels
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 64:
            raise ConfigError(f"CISConfig.n_channels must be an integer from 1 to 64; got {n!r}")
        object.__setattr__(self, "n_channels", int(n))
        fs = _number("fs_hz", self.fs_hz)
        rate = _number("rate_hz", self.rate_hz, high=fs / 2)
        lo = _number("f_lo_hz", self.f_lo_hz)
        hi = _number("f_hi_hz", self.f_hi_hz, low=lo, high=0.49 * fs)
        if self.spacing not in _SPACINGS:
            raise ConfigError(f"CISConfig.spacing must be one of {list(_SPACINGS)}; got {self.spacing!r}")
        cut = _number("envelope_cutoff_hz", self.envelope_cutoff_hz, high=0.49 * fs)
        if self.n_of_m is not None:
            m = self.n_of_m
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n:
                raise ConfigError(f"CISConfig.n_of_m must be None or an integer from 1 to n_channels={n}; "
                                  f"got {m!r}")
            object.__setattr__(self, "n_of_m", int(m))
        width = _number("width_us", self.width_us)
        gap = _number("gap_us", self.gap_us, inclusive=True)
        slot_us = 1e6 / (rate * self.n_slots)
        if 2 * width + gap > slot_us:
            raise ConfigError(
                f"CISConfig: a pulse (2 × width_us + gap_us = {2 * width + gap:g} µs) must fit its interleaving "
                f"slot 1e6 / (rate_hz × {'n_of_m' if self.n_of_m else 'n_channels'}) = {slot_us:.3g} µs; "
                f"got width_us={self.width_us!r}, gap_us={self.gap_us!r}, rate_hz={self.rate_hz!r}, "
                f"slots per frame={self.n_slots}")
        t = _per_channel("threshold_ua", self.threshold_ua, n)
        c = _per_channel("comfort_ua", self.comfort_ua, n)
        if np.any(c <= t):
            raise ConfigError(f"CISConfig.comfort_ua must exceed threshold_ua on every channel; "
                              f"got threshold_ua={self.threshold_ua!r}, comfort_ua={self.comfort_ua!r}")
        base = _number("base_level_db", self.base_level_db, low=-math.inf)
        _number("saturation_db", self.saturation_db, low=base)
        if self.electrodes is None:
            object.__setattr__(self, "electrodes", tuple(range(n)))
        else:
            try:
                ids = tuple(int(e) for e in self.electrodes
                            if not isinstance(e, bool) and int(e) == e and e >= 0)
            except (TypeError, ValueError):
                ids = ()
            if len(ids) != n or len(set(ids)) != n or len(ids) != len(list(self.electrodes)):
                raise ConfigError(f"CISConfig.electrodes must be {n} distinct non-negative integers "
                                  f"(one per channel); got {self.electrodes!r}")
            object.__setattr__(self, "electrodes", ids)
        fo = self.filter_order
        if isinstance(fo, bool) or not isinstance(fo, (int, np.integer)) or not 1 <= fo <= 8:
            raise ConfigError(f"CISConfig.filter_order must be an integer from 1 to 8; got {fo!r}")
        if not isinstance(self.cathodic_first, (bool, np.bool_)):
            raise ConfigError(f"CISConfig.cathodic_first must be true or false; got {self.cathodic_first!r}")
        for name, v in (("fs_hz", fs), ("rate_hz", rate), ("f_lo_hz", lo), ("f_hi_hz", hi),
                        ("envelope_cutoff_hz", cut), ("width_us", width), ("gap_us", gap)):
            object.__setattr__(self, name, v)

    @property
    def n_slots(self) -> int:
        """Interleaving sub-slots per frame (``n_of_m`` or ``n_channels``)."""
        return int(self.n_of_m or self.n_channels)

    @property
    def slot_s(self) -> float:
        """Duration of one interleaving sub-slot (s)."""
        return 1.0 / (self.rate_hz * self.n_slots)

    @property
    def thresholds_ua(self) -> np.ndarray:
        """Threshold level per channel (µA)."""
        return _per_channel("threshold_ua", self.threshold_ua, self.n_channels)

    @property
    def comforts_ua(self) -> np.ndarray:
        """Comfort level per channel (µA)."""
        return _per_channel("comfort_ua", self.comfort_ua, self.n_channels)

    @property
    def edges_hz(self) -> np.ndarray:
        """Band edges (Hz), ``n_channels + 1`` values."""
        return band_edges_hz(self.n_channels, self.f_lo_hz, self.f_hi_hz, self.spacing)

    def band_sos(self) -> list[np.ndarray]:
        """Second-order sections of each channel's band-pass filter."""
        e = self.edges_hz
        return [signal.butter(self.filter_order, [e[i], e[i + 1]], btype="bandpass", fs=self.fs_hz,
                              output="sos") for i in range(self.n_channels)]

    def envelope_to_ua(self, envelope: Any) -> np.ndarray:
        """Map envelopes (linear, full scale 1; shape (..., n_channels)) to amplitudes in µA.

        Values below the base level come back as NaN (no pulse).
        """
        env = np.asarray(envelope, float)
        with np.errstate(divide="ignore"):
            level_db = 20.0 * np.log10(np.maximum(env, 0.0))
        x = (level_db - self.base_level_db) / (self.saturation_db - self.base_level_db)
        t, c = self.thresholds_ua, self.comforts_ua
        amp = t + (c - t) * np.clip(x, 0.0, 1.0)
        return np.where(x >= 0.0, amp, np.nan)

    def ua_to_envelope(self, amplitude_ua: Any, channel: Any) -> np.ndarray:
        """Inverse of :meth:`envelope_to_ua` for pulses on ``channel`` (saturated values stay saturated)."""
        ch = np.asarray(channel, int)
        t, c = self.thresholds_ua[ch], self.comforts_ua[ch]
        x = np.clip((np.asarray(amplitude_ua, float) - t) / (c - t), 0.0, 1.0)
        env: np.ndarray = 10.0 ** ((self.base_level_db + x * (self.saturation_db - self.base_level_db)) / 20.0)
        return env


class CISEncoder:
    """Streaming CIS encoder: audio blocks in, one :class:`StimPlan` (``source="auditory"``) per block.

    Causal and stateful (filter memory, frame clock, the last frame's envelopes), so
    ``encode(audio)`` equals the concatenated ``step`` plans for any block size.

    Parameters
    ----------
    config : CISConfig
    """

    source = "auditory"

    def __init__(self, config: CISConfig | None = None) -> None:
        if config is None:
            config = CISConfig()
        if not isinstance(config, CISConfig):
            raise ConfigError(f"CISEncoder config must be a CISConfig; got {type(config).__name__}")
        self.config = config
        self._band_sos = config.band_sos()
        self._env_sos = signal.butter(2, config.envelope_cutoff_hz, btype="lowpass", fs=config.fs_hz,
                                      output="sos")
        self._electrodes = np.asarray(config.electrodes, np.int32)
        self._t = config.thresholds_ua
        self.n_reanchors = 0
        self.reset()

    def reset(self) -> None:
        """Forget filter state, the frame clock and the plan counter (a new stream)."""
        self._zi_band = [np.zeros((s.shape[0], 2)) for s in self._band_sos]
        self._zi_env = np.zeros((self._env_sos.shape[0], self.config.n_channels, 2))
        self._t0: float | None = None
        self._n_seen = 0
        # Envelopes of the last _n_hist samples seen (a frame that started in an earlier block).
        self._n_hist = int(math.ceil(self.config.fs_hz / self.config.rate_hz)) + 2
        self._hist = np.zeros((self.config.n_channels, self._n_hist))
        self.seq = 0

    def envelopes(self, audio_block: Any) -> np.ndarray:
        """Advance the filters over a block and return its envelopes, shape (n_channels, n_samples)."""
        x = np.asarray(audio_block, float)
        out: np.ndarray = np.empty((self.config.n_channels, x.shape[0]))
        for i, sos in enumerate(self._band_sos):
            out[i], self._zi_band[i] = signal.sosfilt(sos, x, zi=self._zi_band[i])
        np.abs(out, out=out)
        out, self._zi_env = signal.sosfilt(self._env_sos, out, axis=-1, zi=self._zi_env)
        out *= _RECT_GAIN
        np.maximum(out, 0.0, out=out)
        return out

    def _check_block(self, audio_block: Any) -> np.ndarray:
        x = np.asarray(audio_block)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValidationError(f"audio block must be a 1-D array of numbers (mono, full scale ±1); "
                                  f"got dtype {x.dtype}, shape {x.shape}")
        x = x.astype(float)
        if not np.all(np.isfinite(x)):
            raise ValidationError("audio block must be finite; got NaN or inf samples")
        return x

    def step(self, audio_block: Any, t_start_s: float) -> StimPlan:
        """Encode one audio block whose first sample is at ``t_start_s`` on the session clock.

        The plan covers ``[t_start_s, t_start_s + len(audio_block) / fs_hz)``, or up to the end
        of its last pulse if that one started in the block and ends after it. Blocks are
        expected back to back; a ``t_start_s`` more than half a sample away from where the
        previous block ended restarts the frame clock there (filter state is kept) and counts
        in ``n_reanchors``.

        ``audio_block`` is mono, full scale ±1: integer PCM must be scaled first (:func:`read_wav
        <cortexlink.stim.audio.read_wav>` does), it is not rescaled here.

        Raises
        ------
        ValidationError
            For audio that is not a finite 1-D numeric array, or a non-finite ``t_start_s``.
        """
        x = self._check_block(audio_block)
        try:
            t_start = float(t_start_s)
        except (TypeError, ValueError):
            t_start = math.nan
        if not math.isfinite(t_start):
            raise ValidationError(f"t_start_s must be a finite number (session clock, s); got {t_start_s!r}")
        cfg = self.config
        fs = cfg.fs_hz
        if self._t0 is None:
            self._t0 = t_start
        elif abs(t_start - (self._t0 + self._n_seen / fs)) > 0.5 / fs:
            self._t0, self._n_seen = t_start, 0
            self.n_reanchors += 1
        n = x.shape[0]
        t_end = t_start + n / fs
        plan_seq = self.seq
        self.seq += 1
        if n == 0:
            return StimPlan.empty(t_start, t_end, self.source, plan_seq)
        env = self.envelopes(x)
        s0 = self._n_seen
        pulses = self._pulses(env, s0)
        self._hist = np.concatenate([self._hist, env], axis=1)[:, -self._n_hist:]
        self._n_seen = s0 + n
        if pulses.size:
            # onsets come from the stream's own clock (t0 + slot); where the caller's t_start_s is a
            # rounding error later than a pulse on the block's first sample, the pulse moves onto it
            pulses["time_s"] = np.maximum(pulses["time_s"], t_start)
            # a pulse that starts in the block is delivered whole: the window covers it
            t_end = max(t_end, float(pulse_end_s(pulses).max()))
        return StimPlan(pulses, t_start, t_end, self.source, plan_seq)

    def _pulses(self, env: np.ndarray, s0: int) -> np.ndarray:
        """Pulses whose onset falls in samples [s0, s0 + n) of the stream."""
        cfg = self.config
        fs, rate, n_ch, n_slots = cfg.fs_hz, cfg.rate_hz, cfg.n_channels, cfg.n_slots
        n = env.shape[1]
        # Frames that may have a pulse in this block: start at most one frame before it.
        k_lo = max(0, math.floor(s0 / fs * rate) - 1)
        k_hi = math.ceil((s0 + n) / fs * rate) + 1
        k = np.arange(k_lo, k_hi + 1, dtype=np.int64)
        frame_sample = np.floor(k * (fs / rate) + 1e-9).astype(np.int64)
        # started by the block's end, and recently enough to be in the history
        keep = (frame_sample < s0 + n) & (frame_sample >= s0 - self._n_hist)
        k, frame_sample = k[keep], frame_sample[keep]
        if k.size == 0:
            return empty_pulses()
        # Envelope of every channel at each frame's first sample (kept from earlier blocks for a
        # frame that started before this one).
        h = self._n_hist
        env_f = np.concatenate([self._hist, env], axis=1)[:, frame_sample - s0 + h].T
        amp = cfg.envelope_to_ua(env_f)                       # (frames, channels), NaN = silent
        if cfg.n_of_m is not None and cfg.n_of_m < n_ch:
            order = np.argsort(-env_f, axis=1, kind="stable")  # ties: the lower channel wins
            chosen = np.zeros_like(env_f, dtype=bool)
            np.put_along_axis(chosen, order[:, :cfg.n_of_m], True, axis=1)
            slot = np.cumsum(chosen, axis=1) - 1                # chosen channels in ascending order
        else:
            chosen = np.ones_like(env_f, dtype=bool)
            slot = np.broadcast_to(np.arange(n_ch), env_f.shape)
        q = k[:, None] * n_slots + slot                       # global sub-slot index
        onset_sample = np.floor(q * (fs / (rate * n_slots)) + 1e-9).astype(np.int64)
        fire = chosen & ~np.isnan(amp) & (onset_sample >= s0) & (onset_sample < s0 + n)
        fi, ch = np.nonzero(fire)
        times = self._t0 + q[fi, ch] / (rate * n_slots)
        return biphasic(self._electrodes[ch], times, amp[fi, ch], cfg.width_us, cfg.gap_us,
                        cathodic_first=bool(cfg.cathodic_first))

    def encode(self, audio: Any, t0: float = 0.0) -> StimPlan:
        """Encode a whole signal from a fresh state: one plan over ``[t0, t0 + len / fs_hz)``.

        Equal to the concatenation of ``step`` plans over any split of ``audio``.
        """
        self.reset()
        return self.step(audio, t0)

    def channel_of(self, electrode: Any) -> np.ndarray:
        """Channel index of each electrode id (-1 for an id this encoder does not drive)."""
        lut = {int(e): i for i, e in enumerate(self._electrodes)}
        return np.asarray([lut.get(int(e), -1) for e in np.atleast_1d(electrode)], int)
