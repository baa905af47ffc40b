"""What a CIS electrodogram conveys: vocoder resynthesis and intelligibility (STOI).

:func:`resynthesize` turns the auditory encoder's pulses back into sound the way acoustic
simulations of cochlear implants do (a channel vocoder): each channel's pulse amplitudes are
mapped back from ``[threshold, comfort]`` to an envelope (the inverse of the encoder's
compression; a frame without a pulse is silence), interpolated to the audio rate, and modulate a
carrier limited to that channel's band (band-passed noise, or a sine at the band's geometric
centre); the channels are summed. :func:`intelligibility` scores the resynthesis against the
input with STOI (Taal et al. 2011, the ``pystoi`` package): 0…1, higher is more intelligible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import signal

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim.auditory import CISConfig, CISEncoder
from cortexlink.stim.model import StimPlan, as_pulses

__all__ = ["resynthesize", "intelligibility", "cis_intelligibility_table", "CARRIERS"]

CARRIERS = ("noise", "sine")


def _pulses_of(plan_or_electrodogram: Any) -> tuple[np.ndarray, float | None]:
    """Pulses (and the first plan's start) from a plan, plans, or a pulse array."""
    obj = plan_or_electrodogram
    if isinstance(obj, StimPlan):
        return obj.pulses, obj.t_start_s
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(p, StimPlan) for p in obj):
        return np.concatenate([p.pulses for p in obj]), min(p.t_start_s for p in obj)
    return as_pulses(obj, where="plan_or_electrodogram"), None


def channel_envelopes(plan_or_electrodogram: Any, config: CISConfig, fs_hz: float, duration_s: float,
                      t0: float | None = None) -> np.ndarray:
    """Per-channel envelopes (n_channels, n_samples) decoded from the pulses, at ``fs_hz``.

    Each frame of ``config.rate_hz`` holds the envelope of that channel's pulse in the frame (0
    without one); frames are linearly interpolated to the audio samples. Pulses on electrodes the
    config does not drive are ignored.
    """
    pulses, start = _pulses_of(plan_or_electrodogram)
    t0 = (start if start is not None else 0.0) if t0 is None else float(t0)
    n_samples = int(round(duration_s * fs_hz))
    n_frames = int(math.ceil(duration_s * config.rate_hz)) + 1
    frames = np.zeros((config.n_channels, n_frames))
    assert config.electrodes is not None     # CISConfig fills it in (narrowing for mypy)  # nosec B101
    enc_map = {int(e): i for i, e in enumerate(config.electrodes)}
    ch = np.asarray([enc_map.get(int(e), -1) for e in pulses["electrode"]], int)
    k = np.floor((pulses["time_s"] - t0) * config.rate_hz + 1e-9).astype(np.int64)
    ok = (ch >= 0) & (k >= 0) & (k < n_frames) & np.isfinite(pulses["amplitude_ua"])
    frames[ch[ok], k[ok]] = config.ua_to_envelope(pulses["amplitude_ua"][ok], ch[ok])
    t_frames = np.arange(n_frames) / config.rate_hz
    t_audio = np.arange(n_samples) / fs_hz
    return np.stack([np.interp(t_audio, t_frames, frames[i]) for i in range(config.n_channels)])


def resynthesize(plan_or_electrodogram: Any, config: CISConfig, fs_hz: float, duration_s: float, *,
                 carrier: str = "noise", seed: int = 0, t0: float | None = None) -> np.ndarray:
    """Vocoder resynthesis of a CIS electrodogram: audio (full scale ±1) of ``duration_s`` at ``fs_hz``.

    Parameters
    ----------
    plan_or_electrodogram : StimPlan, sequence of StimPlan, or pulse array
        The encoder's output (streaming plans may be given as a list).
    config : CISConfig
        The encoder's config (bands, electrodes, T/C levels, compression, rate).
    fs_hz, duration_s : float
        Output rate and length.
    carrier : {"noise", "sine"}
        Band-passed Gaussian noise (seeded) or a sine at each band's geometric centre.
    seed : int
        Seed of the noise carriers.
    t0 : float, optional
        Session time of the output's first sample (default: the plan's ``t_start_s``, or 0).

    Raises
    ------
    ConfigError
        For an unknown carrier, a non-positive rate or duration, or bands above ``fs_hz / 2``.
    """
    if carrier not in CARRIERS:
        raise ConfigError(f"carrier must be one of {list(CARRIERS)}; got {carrier!r}")
    if not (fs_hz > 0 and duration_s > 0):
        raise ConfigError(f"fs_hz and duration_s must be > 0; got fs_hz={fs_hz!r}, duration_s={duration_s!r}")
    edges = config.edges_hz
    if edges[-1] >= 0.5 * fs_hz:
        raise ConfigError(f"fs_hz must exceed twice the top band edge ({edges[-1]:g} Hz); got {fs_hz!r}")
    env = channel_envelopes(plan_or_electrodogram, config, fs_hz, duration_s, t0)
    n = env.shape[1]
    t = np.arange(n) / fs_hz
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for i in range(config.n_channels):
        if carrier == "sine":
            c = np.sqrt(2.0) * np.sin(2 * np.pi * math.sqrt(edges[i] * edges[i + 1]) * t)
        else:
            sos = signal.butter(config.filter_order, [edges[i], edges[i + 1]], btype="bandpass",
                                fs=fs_hz, output="sos")
            c = signal.sosfilt(sos, rng.standard_normal(n))
            rms = float(np.sqrt(np.mean(c * c))) if n else 0.0
            c = c / rms if rms > 0 else c
        out += env[i] * c / np.sqrt(2.0)          # unit-RMS carrier × envelope ≈ band of the input
    return out


def intelligibility(audio: Any, config: CISConfig, *, carrier: str = "noise", seed: int = 0,
                    extended: bool = False) -> dict[str, Any]:
    """Encode ``audio`` (at ``config.fs_hz``) with CIS, resynthesise, and score it against the input.

    Returns
    -------
    dict
        ``stoi`` (0…1, or extended STOI if ``extended``), ``n_pulses``, ``pulses_per_s``
        (all electrodes together), ``duration_s``, and ``audio`` (the resynthesis).

    Raises
    ------
    ValidationError
        For audio shorter than STOI needs (about 0.4 s of speech) or not 1-D finite.
    """
    from pystoi import stoi          # heavy-ish import kept out of cortexlink's import path

    x = np.asarray(audio, float)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValidationError(f"audio must be a finite 1-D array; got shape {x.shape}")
    fs = config.fs_hz
    duration = x.shape[0] / fs
    if duration < 0.5:
        raise ValidationError(f"audio must last at least 0.5 s for STOI; got {duration:.3f} s")
    plan = CISEncoder(config).encode(x)
    y = resynthesize(plan, config, fs, duration, carrier=carrier, seed=seed)
    y = y[: x.shape[0]]
    if fs != int(fs):
        raise ValidationError(f"STOI needs an integer sampling rate; got fs_hz={fs!r}")
    score = float(stoi(x, y, int(fs), extended=extended))
    return {"stoi": score, "n_pulses": len(plan), "pulses_per_s": len(plan) / duration,
            "duration_s": duration, "audio": y}


def _fitting_width_us(base: CISConfig, n_channels: int, rate_hz: float) -> float:
    """The base width if a pulse fits its slot, else the widest whole µs that does (≥ 1 µs)."""
    slots = min(base.n_of_m, n_channels) if base.n_of_m else n_channels
    slot_us = 1e6 / (rate_hz * slots)
    if 2 * base.width_us + base.gap_us <= slot_us:
        return base.width_us
    return max(1.0, math.floor((slot_us - base.gap_us) / 2.0))


def cis_intelligibility_table(audio: Any, fs_hz: float, channels: Sequence[int] = (4, 8, 12, 16, 22),
                              rates: Sequence[float] = (500, 900, 1800), *, base: CISConfig | None = None,
                              carrier: str = "noise", seed: int = 0,
                              progress: Callable[[int, int, dict[str, Any]], None] | None = None
                              ) -> list[dict[str, Any]]:
    """STOI of the CIS resynthesis for every channel count × rate (for ``bench stim``).

    The encoder runs at ``fs_hz`` (with no ``base``, the top band edge is
    ``min(7000, 0.45 · fs_hz)``). Where a pulse of the base
    width no longer fits its interleaving slot (many channels at a high rate), the row uses the
    widest phase that does and says so in ``width_us``.

    Parameters
    ----------
    progress : callable, optional
        Called as ``progress(done, total, row)`` after each row.

    Returns
    -------
    list of dict
        ``{n_channels, rate_hz, width_us, stoi, pulses_per_s}`` in the order channels × rates.
    """
    base = CISConfig(fs_hz=fs_hz, f_hi_hz=min(7000.0, 0.45 * fs_hz)) if base is None else base
    if base.fs_hz != fs_hz:
        raise ConfigError(f"base.fs_hz must equal fs_hz={fs_hz!r}; got {base.fs_hz!r}")
    for name in ("threshold_ua", "comfort_ua"):
        if np.ndim(getattr(base, name)) != 0:
            raise ConfigError(f"cis_intelligibility_table needs a scalar base.{name} (it varies the "
                              f"channel count); got {getattr(base, name)!r}")
    grid: Iterable[tuple[int, float]] = [(int(c), float(r)) for c in channels for r in rates]
    grid = list(grid)
    rows: list[dict[str, Any]] = []
    for done, (n_ch, rate) in enumerate(grid, start=1):
        n_of_m = min(base.n_of_m, n_ch) if base.n_of_m else None
        width = _fitting_width_us(base, n_ch, rate)
        cfg = CISConfig(**{**_fields(base), "n_channels": n_ch, "rate_hz": rate, "electrodes": None,
                           "n_of_m": n_of_m, "width_us": width})
        res = intelligibility(audio, cfg, carrier=carrier, seed=seed)
        row = {"n_channels": n_ch, "rate_hz": rate, "width_us": width, "stoi": res["stoi"],
               "pulses_per_s": res["pulses_per_s"]}
        rows.append(row)
        if progress is not None:
            progress(done, len(grid), row)
    return rows


def _fields(cfg: CISConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
