"""Charge-balanced biphasic pulses, electrodes and the stimulation plan every encoder produces.

A pulse is one row of a NumPy structured array of dtype :data:`PULSE_DTYPE`: the electrode it is
delivered on, the onset of its first phase on the session clock (seconds; the implant's sample
clock divided by its sampling rate), the first phase's amplitude and width, the interphase gap,
the second phase's amplitude and width, and which polarity comes first. A symmetric
charge-balanced pulse has ``amplitude2_ua == amplitude_ua`` and ``width2_us == width_us``.

Units: amplitudes in µA, widths and gaps in µs, charge in nC (µA × µs = pC; / 1000 = nC),
area in µm², charge density in µC/cm².

A :class:`StimPlan` holds the pulses one encoder wants delivered in one time window
``[t_start_s, t_end_s)``. Constructing one never judges the values: NaN, negative or huge
amplitudes, unknown electrodes and overlapping pulses are all representable, because it is the
safety interlock's job (:mod:`cortexlink.stim.interlock`) to refuse them and say why.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, as_pulses, empty_pulses, pulse_end_s

__all__ = [
    "PULSE_DTYPE", "MATERIALS", "Electrode", "StimPlan", "biphasic", "pulse_train",
    "empty_pulses", "as_pulses", "charge_nc", "pulse_end_s", "charge_density_uc_cm2", "shannon_k",
]

#: Electrode materials known to the model, with a conservative charge-injection limit (µC/cm²,
#: per phase, cathodic-first biphasic pulses) used when a limits file gives no explicit charge
#: density. Lower ends of the ranges reviewed by Cogan (2008, Annu Rev Biomed Eng 10:275) and
#: Merrill et al. (2005, J Neurosci Methods 141:171); a limits file may set its own value.
MATERIALS: dict[str, float] = {
    "Pt": 100.0,
    "PtIr": 100.0,
    "IrOx": 1000.0,     # activated iridium oxide (AIROF)
    "SIROF": 1000.0,    # sputtered iridium oxide (Utah-array tips used for human ICMS)
    "TiN": 900.0,
    "PEDOT": 1500.0,
}


@dataclasses.dataclass(frozen=True)
class Electrode:
    """One stimulating electrode: its id (the recording channel it sits on), area and material.

    Raises
    ------
    ConfigError
        For a negative id, a non-positive or non-finite area, or an unknown material.
    """

    id: int
    area_um2: float
    material: str = "SIROF"
    enabled: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, (int, np.integer)) or self.id < 0:
            raise ConfigError(f"electrode id must be a non-negative integer; got {self.id!r}")
        try:
            area = float(self.area_um2)
        except (TypeError, ValueError):
            raise ConfigError(f"electrode {self.id}: area_um2 must be a number; got {self.area_um2!r}") from None
        if not (math.isfinite(area) and area > 0):
            raise ConfigError(f"electrode {self.id}: area_um2 must be finite and > 0; got {self.area_um2!r}")
        if self.material not in MATERIALS:
            raise ConfigError(f"electrode {self.id}: material must be one of {sorted(MATERIALS)}; "
                              f"got {self.material!r}")
        if not isinstance(self.enabled, (bool, np.bool_)):
            raise ConfigError(f"electrode {self.id}: enabled must be true or false; got {self.enabled!r}")
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "area_um2", area)
        object.__setattr__(self, "enabled", bool(self.enabled))

    @property
    def area_cm2(self) -> float:
        """Geometric area in cm²."""
        return self.area_um2 * 1e-8


def biphasic(electrode: Any, time_s: Any, amplitude_ua: Any, width_us: Any, gap_us: Any = 0.0, *,
             cathodic_first: bool = True) -> np.ndarray:
    """Symmetric charge-balanced biphasic pulses; arguments broadcast against each other.

    Examples
    --------
    >>> p = biphasic(electrode=[3, 4], time_s=0.01, amplitude_ua=60.0, width_us=200.0, gap_us=50.0)
    >>> len(p), float(charge_nc(p["amplitude_ua"], p["width_us"])[0])
    (2, 12.0)
    """
    e, t, a, w, g = np.broadcast_arrays(np.asarray(electrode), np.asarray(time_s, float),
                                        np.asarray(amplitude_ua, float), np.asarray(width_us, float),
                                        np.asarray(gap_us, float))
    out = np.empty(e.size, PULSE_DTYPE)
    out["electrode"] = e.ravel()
    out["time_s"] = t.ravel()
    out["amplitude_ua"] = out["amplitude2_ua"] = a.ravel()
    out["width_us"] = out["width2_us"] = w.ravel()
    out["gap_us"] = g.ravel()
    out["cathodic_first"] = bool(cathodic_first)
    return out


def pulse_train(electrode: int, start_s: float, rate_hz: float, n_pulses: int, amplitude_ua: Any,
                width_us: float, gap_us: float = 0.0, *, cathodic_first: bool = True) -> np.ndarray:
    """``n_pulses`` symmetric biphasic pulses on one electrode at ``rate_hz`` from ``start_s``.

    ``amplitude_ua`` may be a scalar or one value per pulse (amplitude modulation).

    Raises
    ------
    ConfigError
        For a non-positive rate or a negative pulse count.
    """
    if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz > 0):
        raise ConfigError(f"rate_hz must be a finite number > 0; got {rate_hz!r}")
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 0:
        raise ConfigError(f"n_pulses must be an integer >= 0; got {n_pulses!r}")
    times = float(start_s) + np.arange(int(n_pulses)) / float(rate_hz)
    return biphasic(electrode, times, amplitude_ua, width_us, gap_us, cathodic_first=cathodic_first)


def charge_nc(amplitude_ua: Any, width_us: Any) -> np.ndarray:
    """Charge of one phase in nC (µA × µs / 1000)."""
    q: np.ndarray = np.asarray(amplitude_ua, float) * np.asarray(width_us, float) * 1e-3
    return q


def charge_density_uc_cm2(charge_per_phase_nc: Any, area_um2: Any) -> np.ndarray:
    """Charge density per phase in µC/cm² for a charge (nC) on a geometric area (µm²)."""
    return np.asarray(charge_per_phase_nc, float) * 1e-3 / (np.asarray(area_um2, float) * 1e-8)


def shannon_k(charge_per_phase_nc: Any, area_um2: Any) -> np.ndarray:
    """Shannon's k = log10(D) + log10(Q), D in µC/cm² and Q in µC per phase (Shannon 1992).

    k ≤ 1.85 is the classic damage boundary for macro-electrodes; designs keep 1.5–1.75.
    Non-positive charge gives ``-inf``.
    """
    q_uc = np.asarray(charge_per_phase_nc, float) * 1e-3
    d = charge_density_uc_cm2(charge_per_phase_nc, area_um2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k: np.ndarray = np.log10(d) + np.log10(q_uc)
    return k


@dataclasses.dataclass
class StimPlan:
    """The pulses one encoder asks to deliver in the window ``[t_start_s, t_end_s)``.

    Parameters
    ----------
    pulses : structured array of :data:`PULSE_DTYPE`
        Copied and sorted by onset time (stable). Values are not judged here.
    t_start_s, t_end_s : float
        The window the plan covers on the session clock; a stimulator delivers a plan's pulses
        only inside its window and never repeats a plan, so a stalled encoder means silence.
    source : str
        Which encoder produced it (``"auditory"``, ``"touch"``, ``"manual"``…), for the audit log.
    seq : int
        The encoder's running plan number.

    Raises
    ------
    ValidationError
        If ``pulses`` is not a structured array with the pulse fields (see :func:`as_pulses`), or
        ``source`` is not a string.
    """

    pulses: np.ndarray
    t_start_s: float
    t_end_s: float
    source: str = "manual"
    seq: int = 0

    def __post_init__(self) -> None:
        arr = as_pulses(self.pulses, where="StimPlan.pulses")
        # NaN times sort last; the interlock refuses them anyway.
        self.pulses = arr[np.argsort(arr["time_s"], kind="stable")]
        try:
            self.t_start_s = float(self.t_start_s)
            self.t_end_s = float(self.t_end_s)
        except (TypeError, ValueError):
            raise ValidationError(f"StimPlan window must be numbers; got t_start_s={self.t_start_s!r}, "
                                  f"t_end_s={self.t_end_s!r}") from None
        if not isinstance(self.source, str):
            raise ValidationError(f"StimPlan.source must be a string; got {type(self.source).__name__}")
        try:
            self.seq = int(self.seq)
        except (TypeError, ValueError, OverflowError):
            raise ValidationError(f"StimPlan.seq must be an integer; got {self.seq!r}") from None

    def __len__(self) -> int:
        return int(self.pulses.shape[0])

    @property
    def electrodes(self) -> np.ndarray:
        """Sorted unique electrode ids the plan uses."""
        return np.unique(self.pulses["electrode"])

    @classmethod
    def empty(cls, t_start_s: float, t_end_s: float, source: str = "manual", seq: int = 0) -> "StimPlan":
        """A plan with no pulses (an encoder that has nothing to say still says so)."""
        return cls(empty_pulses(), t_start_s, t_end_s, source, seq)
