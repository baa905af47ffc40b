"""Touch encoder: contact force on the fingers → biomimetic ICMS pulse trains.

Biomimetic encoders of touch (e.g. Okorokova et al. 2018, J Neural Eng 15:066033; Valle et al.
2018, Neuron 100:37) drive stimulation not only with the force itself (the *tonic*, slowly
adapting part) but also with its rate of change (the *phasic*, rapidly adapting part), so that
making and breaking contact produce strong transients, as they do in the afferent population.
Here, for each sensor (finger) with force ``F`` (N):

* ``tonic = F / force_max_n`` (clipped to 1);
* ``on`` and ``off``: the positive and negative parts of ``dF/dt``, each smoothed by a
  first-order low-pass of time constant ``transient_tau_s`` and normalised by
  ``force_max_n / transient_tau_s`` (a step from 0 to full force gives about 1);
* ``drive = clip(tonic_gain · tonic + onset_gain · on + offset_gain · off, 0, 1)``;
* amplitude ``threshold_ua + (max_ua − threshold_ua) · drive`` and frequency
  ``freq_min_hz + (freq_max_hz − freq_min_hz) · drive`` (or only one of them modulated, see
  ``modulate``); every electrode of the sensor gets the same train.

A sensor stimulates while it is in contact (``F > contact_threshold_n``) and, after contact is
lost, while its offset transient alone still gives ``drive ≥ min_drive`` (the release burst);
otherwise it is silent: no force, no pulses. Pulse timing comes from a phase accumulator per
sensor carried across calls, so a 100 Hz train stays exactly 100 Hz across bins; the first pulse
of a contact is delivered at its first sample.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim._checks import number, per_item
from cortexlink.stim.model import StimPlan, biphasic, empty_pulses, pulse_end_s

__all__ = ["TouchConfig", "TouchEncoder", "SimulatedHand", "cursor_contact_forces", "FINGERS"]

FINGERS = ("thumb", "index", "middle", "ring", "little")
_MODULATE = ("both", "amplitude", "frequency")
_EPS_S = 1e-9          # a pulse this close to a sample's end is delivered at the next sample's start


def _num(name: str, value: Any, *, owner: str = "TouchConfig", **kw: Any) -> float:
    return number(owner, name, value, **kw)


def _per_sensor(name: str, value: Any, n: int) -> np.ndarray:
    return per_item("TouchConfig", name, value, n, "sensor")


def _default_map() -> tuple[tuple[int, ...], ...]:
    return tuple((2 * i, 2 * i + 1) for i in range(len(FINGERS)))


@dataclasses.dataclass(frozen=True)
class TouchConfig:
    """Parameters of the biomimetic touch encoder (validated on construction).

    Parameters
    ----------
    sensor_electrodes : sequence of sequences of int
        For each sensor (finger), the electrode ids it drives. Default: 5 fingers × 2 electrodes
        (thumb → 0, 1; index → 2, 3; …). An electrode belongs to one sensor only.
    sensor_names : sequence of str or None
        Names for the sensors (default: the five fingers for 5 sensors, else ``s0``, ``s1``…).
    force_max_n : float
        Force giving the full tonic drive (N).
    contact_threshold_n : float
        Force above which a sensor is in contact (N).
    threshold_ua, max_ua : float or sequence of float
        Amplitude range (µA), scalar or one per sensor; ``max_ua > threshold_ua``.
    freq_min_hz, freq_max_hz : float
        Pulse-rate range (Hz); at most 300 Hz (human ICMS practice).
    width_us, gap_us : float
        Phase width and interphase gap (µs) of the symmetric biphasic pulses.
    tonic_gain, onset_gain, offset_gain : float
        Weights of force, rising-force and falling-force terms in the drive (≥ 0).
    transient_tau_s : float
        Time constant of the onset/offset transients (s).
    min_drive : float
        After contact is lost, the release burst lasts while the drive is at least this.
    modulate : {"both", "amplitude", "frequency"}
        Which pulse parameters the drive modulates; the other stays at its minimum.
    cathodic_first : bool
        Polarity of the first phase.
    sync_hz : float or None
        When given, every pulse onset moves to the next tick of one grid at ``sync_hz`` on the
        session clock (each sensor at most one pulse per tick), so that all electrodes pulse
        together: the recording then loses one blanking window per tick instead of one per
        electrode's pulse (10 electrodes pulsing at once at 100 Hz blank about 20 % of the time;
        the same trains offset from each other blank far more). Rates are kept on average; rates
        above ``sync_hz`` are cut to it. ``freq_max_hz``
        and ``sync_hz`` ≤ 300 Hz.

    Raises
    ------
    ConfigError
        Naming the field, what is allowed and what was given.
    """

    sensor_electrodes: Sequence[Sequence[int]] = dataclasses.field(default_factory=_default_map)
    sensor_names: Sequence[str] | None = None
    force_max_n: float = 10.0
    contact_threshold_n: float = 0.05
    threshold_ua: Any = 20.0
    max_ua: Any = 80.0
    freq_min_hz: float = 50.0
    freq_max_hz: float = 200.0
    width_us: float = 200.0
    gap_us: float = 50.0
    tonic_gain: float = 0.5
    onset_gain: float = 1.5
    offset_gain: float = 1.0
    transient_tau_s: float = 0.03
    min_drive: float = 0.1
    modulate: str = "both"
    cathodic_first: bool = True
    sync_hz: float | None = None

    def __post_init__(self) -> None:
        groups = self.sensor_electrodes
        try:
            norm = tuple(tuple(int(e) for e in g) for g in groups)
            ok = (len(norm) > 0 and all(len(g) > 0 for g in norm)
                  and all(not isinstance(e, bool) and int(e) == e and e >= 0 for g in groups for e in g))
        except (TypeError, ValueError):
            norm, ok = (), False
        flat = [e for g in norm for e in g]
        if not ok or len(flat) != len(set(flat)):
            raise ConfigError("TouchConfig.sensor_electrodes must be a non-empty list of non-empty lists of "
                              f"distinct non-negative electrode ids (one list per sensor); got {groups!r}")
        object.__setattr__(self, "sensor_electrodes", norm)
        n = len(norm)
        if self.sensor_names is None:
            names = FINGERS if n == len(FINGERS) else tuple(f"s{i}" for i in range(n))
        else:
            names = tuple(self.sensor_names)
            if len(names) != n or not all(isinstance(s, str) and s for s in names) or len(set(names)) != n:
                raise ConfigError(f"TouchConfig.sensor_names must be {n} distinct non-empty strings; "
                                  f"got {self.sensor_names!r}")
        object.__setattr__(self, "sensor_names", tuple(names))
        fmax = _num("force_max_n", self.force_max_n)
        _num("contact_threshold_n", self.contact_threshold_n, high=fmax)
        t = _per_sensor("threshold_ua", self.threshold_ua, n)
        m = _per_sensor("max_ua", self.max_ua, n)
        if np.any(m <= t):
            raise ConfigError(f"TouchConfig.max_ua must exceed threshold_ua for every sensor; "
                              f"got threshold_ua={self.threshold_ua!r}, max_ua={self.max_ua!r}")
        f_lo = _num("freq_min_hz", self.freq_min_hz, high=300.0)
        _num("freq_max_hz", self.freq_max_hz, low=f_lo, high=300.0)
        width = _num("width_us", self.width_us)
        gap = _num("gap_us", self.gap_us, inclusive=True)
        if (2 * width + gap) * 1e-6 >= 1.0 / float(self.freq_max_hz):
            raise ConfigError(f"TouchConfig: a pulse (2 × width_us + gap_us = {2 * width + gap:g} µs) must be "
                              f"shorter than the period at freq_max_hz={self.freq_max_hz!r}")
        for name in ("tonic_gain", "onset_gain", "offset_gain"):
            _num(name, getattr(self, name), inclusive=True)
        _num("transient_tau_s", self.transient_tau_s)
        _num("min_drive", self.min_drive, high=1.0)
        if self.modulate not in _MODULATE:
            raise ConfigError(f"TouchConfig.modulate must be one of {list(_MODULATE)}; got {self.modulate!r}")
        if not isinstance(self.cathodic_first, (bool, np.bool_)):
            raise ConfigError(f"TouchConfig.cathodic_first must be true or false; got {self.cathodic_first!r}")
        if self.sync_hz is not None:
            sync = _num("sync_hz", self.sync_hz, high=300.0)
            if (2 * width + gap) * 1e-6 >= 1.0 / sync:
                raise ConfigError(f"TouchConfig: a pulse (2 × width_us + gap_us = {2 * width + gap:g} µs) must be "
                                  f"shorter than the period at sync_hz={self.sync_hz!r}")

    @property
    def n_sensors(self) -> int:
        """Number of force sensors (fingers)."""
        return len(self.sensor_electrodes)

    @property
    def electrodes(self) -> tuple[int, ...]:
        """All electrode ids, sensor by sensor."""
        return tuple(e for g in self.sensor_electrodes for e in g)

    def amplitude_ua(self, drive: Any) -> np.ndarray:
        """Amplitude per sensor (µA) for drives in [0, 1] (shape (..., n_sensors))."""
        d = np.asarray(drive, float) if self.modulate != "frequency" else np.zeros(np.shape(drive))
        t = _per_sensor("threshold_ua", self.threshold_ua, self.n_sensors)
        m = _per_sensor("max_ua", self.max_ua, self.n_sensors)
        amp: np.ndarray = t + (m - t) * d
        return amp

    def frequency_hz(self, drive: Any) -> np.ndarray:
        """Pulse rate (Hz) for drives in [0, 1]."""
        d = np.asarray(drive, float) if self.modulate != "amplitude" else np.zeros(np.shape(drive))
        return self.freq_min_hz + (self.freq_max_hz - self.freq_min_hz) * d


class TouchEncoder:
    """Streaming biomimetic touch encoder: force samples in, one :class:`StimPlan` (``source="touch"``) per call.

    Parameters
    ----------
    config : TouchConfig
    """

    source = "touch"

    def __init__(self, config: TouchConfig | None = None) -> None:
        if config is None:
            config = TouchConfig()
        if not isinstance(config, TouchConfig):
            raise ConfigError(f"TouchEncoder config must be a TouchConfig; got {type(config).__name__}")
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget forces, transients, pulse phases and the plan counter."""
        n = self.config.n_sensors
        self._f_prev = np.zeros(n)
        self._on = np.zeros(n)
        self._off = np.zeros(n)
        self._phase = np.ones(n)           # cycles since the last pulse; 1 = fire at the next active sample
        self.last_drive = np.zeros(n)      # drive per sensor at the last sample (for displays)
        self._last_tick: dict[int, float] = {}   # with sync_hz: the last grid tick each sensor used
        self.seq = 0

    def _check(self, forces: Any, dt_s: Any) -> tuple[np.ndarray, float]:
        n = self.config.n_sensors
        try:
            f = np.asarray(forces, float)
        except (TypeError, ValueError):
            raise ValidationError(f"forces must be numbers (N), shape ({n},) or (n_samples, {n}); "
                                  f"got {type(forces).__name__}") from None
        if f.ndim == 1 and f.shape[0] == n:
            f = f[None, :]
        if f.ndim != 2 or f.shape[1] != n:
            raise ValidationError(f"forces must have shape ({n},) or (n_samples, {n}) (N, one column per "
                                  f"sensor); got shape {np.shape(forces)}")
        if not np.all(np.isfinite(f)):
            raise ValidationError("forces must be finite; got NaN or inf")
        try:
            dt = float(dt_s)
        except (TypeError, ValueError):
            dt = math.nan
        if not (math.isfinite(dt) and dt > 0):
            raise ValidationError(f"dt_s must be a finite number > 0 (seconds per force sample); got {dt_s!r}")
        return np.maximum(f, 0.0), dt                 # a sensor cannot pull: negative readings are 0 N

    def step(self, forces: Any, t_start_s: float, dt_s: float) -> StimPlan:
        """Encode force samples; sample ``i`` holds over ``[t_start_s + i·dt_s, t_start_s + (i+1)·dt_s)``.

        Parameters
        ----------
        forces : array, shape (n_sensors,) or (n_samples, n_sensors)
            Contact force per sensor (N); negative readings count as 0.
        t_start_s : float
            Session time of the first sample.
        dt_s : float
            Duration of one sample (s), e.g. the bin width.

        Returns
        -------
        StimPlan
            Over ``[t_start_s, t_start_s + n_samples · dt_s)``, extended to the end of the last
            pulse if one that starts inside runs past it (by less than 2 · width + gap): the
            interlock accepts only pulses that lie whole inside their plan's window.

        Raises
        ------
        ValidationError
            For a wrong shape, non-finite forces, or a non-positive ``dt_s``.
        """
        f, dt = self._check(forces, dt_s)
        try:
            t0 = float(t_start_s)
        except (TypeError, ValueError):
            t0 = math.nan
        if not math.isfinite(t0):
            raise ValidationError(f"t_start_s must be a finite number (session clock, s); got {t_start_s!r}")
        cfg = self.config
        n_samples = f.shape[0]
        seq = self.seq
        self.seq += 1
        if n_samples == 0:
            return StimPlan.empty(t0, t0, self.source, seq)
        drive, active = self._drive(f, dt)
        amp = cfg.amplitude_ua(drive)
        freq = cfg.frequency_hz(drive)
        times: list[float] = []
        amps: list[float] = []
        sensors: list[int] = []
        for s in range(cfg.n_sensors):
            phase = self._phase[s]
            for i in range(n_samples):
                if not active[i, s]:
                    phase = 1.0
                    continue
                rate = freq[i, s]
                t_i = t0 + i * dt
                wait = max(0.0, (1.0 - phase) / rate)      # until the next pulse
                while wait < dt - _EPS_S:
                    times.append(t_i + wait)
                    amps.append(amp[i, s])
                    sensors.append(s)
                    wait += 1.0 / rate
                phase = 1.0 - max(0.0, wait - dt) * rate
            self._phase[s] = phase
        self.last_drive = drive[-1].copy()
        times_a, amps_a, sensors_a = np.asarray(times), np.asarray(amps), np.asarray(sensors, int)
        if cfg.sync_hz is not None and times_a.size:
            times_a, amps_a, sensors_a = self._sync(times_a, amps_a, sensors_a, cfg.sync_hz)
            times_a = np.maximum(times_a, t0)        # a tick a rounding error before the block is its start
        pulses = self._expand(times_a, amps_a, sensors_a)
        t_end = t0 + n_samples * dt
        if pulses.size:       # a pulse that starts in the window is delivered whole: the window covers it
            t_end = max(t_end, float(pulse_end_s(pulses).max()))
        return StimPlan(pulses, t0, t_end, self.source, seq)

    def _sync(self, times: np.ndarray, amps: np.ndarray, sensors: np.ndarray,
              sync_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Onsets moved to the next tick of the common grid, one pulse per sensor and tick. A tick
        past the block stays in this plan (whose window then reaches it); the next block will not
        use that tick again for the sensor."""
        sync = float(sync_hz)
        k = np.ceil(times * sync - 1e-6)
        last = self._last_tick
        keep = np.ones(times.size, bool)
        for s in np.unique(sensors):
            m = np.flatnonzero(sensors == s)
            ticks = k[m]
            # a sensor never pulses twice on one tick, nor on a tick it already used last block
            dup = np.concatenate([[ticks[0] <= last.get(int(s), -np.inf)], ticks[1:] <= np.maximum.accumulate(ticks)[:-1]])
            keep[m[dup]] = False
            if (~dup).any():
                last[int(s)] = float(ticks[~dup].max())
        self._last_tick = last
        t = k / sync
        return t[keep], amps[keep], sensors[keep]

    def _drive(self, f: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Drive and activity per sample and sensor; advances the transient filters."""
        cfg = self.config
        a = math.exp(-dt / cfg.transient_tau_s)
        norm = cfg.force_max_n / cfg.transient_tau_s
        drive = np.empty_like(f)
        active = np.empty(f.shape, bool)
        prev, on, off = self._f_prev, self._on, self._off
        for i in range(f.shape[0]):
            rate = (f[i] - prev) / dt
            on = a * on + (1.0 - a) * np.maximum(rate, 0.0) / norm
            off = a * off + (1.0 - a) * np.maximum(-rate, 0.0) / norm
            tonic = np.minimum(f[i] / cfg.force_max_n, 1.0)
            d = np.clip(cfg.tonic_gain * tonic + cfg.onset_gain * on + cfg.offset_gain * off, 0.0, 1.0)
            contact = f[i] > cfg.contact_threshold_n
            active[i] = contact | (cfg.offset_gain * off >= cfg.min_drive)
            drive[i] = d
            prev = f[i]
        self._f_prev, self._on, self._off = prev.copy(), on, off
        return drive, active

    def _expand(self, times: np.ndarray, amps: np.ndarray, sensors: np.ndarray) -> np.ndarray:
        """One pulse per electrode of each sensor's pulse."""
        cfg = self.config
        if times.size == 0:
            return empty_pulses()
        parts = [biphasic(np.asarray(cfg.sensor_electrodes[s], np.int32)[None, :],
                          times[sensors == s][:, None], amps[sensors == s][:, None], cfg.width_us, cfg.gap_us,
                          cathodic_first=bool(cfg.cathodic_first))
                 for s in np.unique(sensors)]
        return np.concatenate(parts)

    def encode(self, forces: Any, dt_s: float, t0: float = 0.0) -> StimPlan:
        """Encode a whole force recording from a fresh state (equal to streaming ``step`` calls)."""
        self.reset()
        return self.step(forces, t0, dt_s)


@dataclasses.dataclass(frozen=True)
class SimulatedHand:
    """A simulated five-finger grasp: finger forces over time for demos and tests.

    Each finger closes ``finger_lag_s`` after the previous one: no force until ``contact_s``,
    a linear ramp over ``ramp_s`` to its peak force, a hold of ``hold_s``, a linear release over
    ``release_s``, then no force.

    Parameters
    ----------
    peak_force_n : sequence of float
        Peak force per finger (N); its length is the number of fingers.
    """

    peak_force_n: Sequence[float] = (3.0, 4.0, 3.0, 2.0, 1.0)
    contact_s: float = 0.2
    ramp_s: float = 0.05
    hold_s: float = 0.6
    release_s: float = 0.03
    finger_lag_s: float = 0.01

    def __post_init__(self) -> None:
        try:
            peaks = tuple(float(p) for p in self.peak_force_n)
        except (TypeError, ValueError):
            peaks = ()
        if not peaks or not all(math.isfinite(p) and p >= 0 for p in peaks):
            raise ConfigError(f"SimulatedHand.peak_force_n must be finite forces >= 0 (N), one per finger; "
                              f"got {self.peak_force_n!r}")
        object.__setattr__(self, "peak_force_n", peaks)
        _num("contact_s", self.contact_s, inclusive=True, owner="SimulatedHand")
        for name in ("ramp_s", "release_s"):
            _num(name, getattr(self, name), owner="SimulatedHand")
        for name in ("hold_s", "finger_lag_s"):
            _num(name, getattr(self, name), inclusive=True, owner="SimulatedHand")

    @property
    def duration_s(self) -> float:
        """Time when the last finger has let go."""
        n = len(self.peak_force_n)
        return self.contact_s + (n - 1) * self.finger_lag_s + self.ramp_s + self.hold_s + self.release_s

    def forces(self, t_s: Any) -> np.ndarray:
        """Finger forces (N) at times ``t_s``: shape (n_times, n_fingers)."""
        t = np.atleast_1d(np.asarray(t_s, float))[:, None]
        lag = np.arange(len(self.peak_force_n))[None, :] * self.finger_lag_s
        tc = t - (self.contact_s + lag)                          # time since this finger's contact
        up = np.clip(tc / self.ramp_s, 0.0, 1.0)
        down = np.clip((tc - self.ramp_s - self.hold_s) / self.release_s, 0.0, 1.0)
        f: np.ndarray = np.asarray(self.peak_force_n)[None, :] * up * (1.0 - down)
        return f


def cursor_contact_forces(cursor_xy: Any, targets_xy: Any, radius: float, force_max_n: float = 5.0) -> np.ndarray:
    """Forces (N) of a cursor pressing into round targets, one per target.

    Zero outside a target; inside, proportional to how deep the cursor is (``force_max_n`` at
    the centre). Use it to give touch feedback when a cursor touches targets.

    Raises
    ------
    ValidationError
        For a cursor that is not (x, y) or targets that are not (n, 2).
    ConfigError
        For a non-positive radius or force.
    """
    c = np.asarray(cursor_xy, float)
    tg = np.atleast_2d(np.asarray(targets_xy, float))
    if c.shape != (2,) or tg.ndim != 2 or tg.shape[1] != 2:
        raise ValidationError(f"cursor_xy must be (x, y) and targets_xy (n, 2); got shapes {c.shape}, {tg.shape}")
    _num("radius", radius, owner="cursor_contact_forces")
    _num("force_max_n", force_max_n, owner="cursor_contact_forces")
    depth = 1.0 - np.hypot(*(tg - c).T) / radius
    f: np.ndarray = force_max_n * np.clip(depth, 0.0, 1.0)
    return f
