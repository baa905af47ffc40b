"""The pulse record shared by stimulation, the simulator and artefact removal.

One stimulation pulse is one row of a structured array of dtype :data:`PULSE_DTYPE` (units in the
field names; see :mod:`cortexlink.stim.model` for the model built on it). It lives in ``core`` so
that the simulator (which renders stimulation artefacts) and the DSP (which blanks them) can take
pulses without importing the stimulation layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError

__all__ = ["PULSE_DTYPE", "PULSE_FIELDS", "empty_pulses", "as_pulses", "pulse_end_s", "pulses_to_dict",
           "pulses_from_dict"]

PULSE_DTYPE = np.dtype([
    ("electrode", "<i4"),       # electrode id (the recording channel it sits on)
    ("time_s", "<f8"),          # onset of the first phase, session clock (s)
    ("amplitude_ua", "<f8"),    # first-phase amplitude (µA, > 0)
    ("width_us", "<f8"),        # first-phase width (µs)
    ("gap_us", "<f8"),          # interphase gap (µs)
    ("amplitude2_ua", "<f8"),   # second-phase amplitude (µA, > 0)
    ("width2_us", "<f8"),       # second-phase width (µs)
    ("cathodic_first", "?"),    # True: cathodic phase first (the usual choice for ICMS)
])
#: The field names of :data:`PULSE_DTYPE`, in order.
PULSE_FIELDS: tuple[str, ...] = PULSE_DTYPE.names or ()


def empty_pulses(n: int = 0) -> np.ndarray:
    """A zero-filled pulse array of length ``n`` (dtype :data:`PULSE_DTYPE`)."""
    return np.zeros(int(n), PULSE_DTYPE)


def as_pulses(pulses: Any, *, where: str = "pulses") -> np.ndarray:
    """Return ``pulses`` as a 1-D C-contiguous array of dtype :data:`PULSE_DTYPE` (a copy).

    Accepts an array of that dtype, or any structured array with the same field names. Values
    are not judged (see the module docstring).

    Raises
    ------
    ValidationError
        If ``pulses`` is not a structured array with exactly the pulse fields, or is not 1-D.
    """
    arr = np.asarray(pulses)
    if arr.dtype.names is None or set(arr.dtype.names) != set(PULSE_FIELDS):
        raise ValidationError(f"{where} must be a structured array with fields {list(PULSE_FIELDS)}; "
                              f"got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValidationError(f"{where} must be 1-D; got shape {arr.shape}")
    out = np.empty(arr.shape[0], PULSE_DTYPE)
    for name in PULSE_FIELDS:
        out[name] = arr[name]
    return out


def pulse_end_s(pulses: np.ndarray) -> np.ndarray:
    """End of each pulse's second phase on the session clock (s)."""
    end: np.ndarray = pulses["time_s"] + (pulses["width_us"] + pulses["gap_us"] + pulses["width2_us"]) * 1e-6
    return end


def pulses_to_dict(pulses: np.ndarray) -> dict[str, np.ndarray]:
    """Pulses as one plain numeric array per field (how they travel on the bus and into files)."""
    p = np.asarray(pulses)
    return {name: np.ascontiguousarray(p[name]).astype(np.uint8 if name == "cathodic_first" else p.dtype[name])
            for name in PULSE_FIELDS}


def pulses_from_dict(fields: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`pulses_to_dict`.

    Raises
    ------
    ValidationError
        If a field is missing or the fields differ in length.
    """
    missing = [n for n in PULSE_FIELDS if n not in fields]
    if missing:
        raise ValidationError(f"pulse fields missing: {missing}")
    cols = {n: np.asarray(fields[n]).ravel() for n in PULSE_FIELDS}
    lengths = {len(c) for c in cols.values()}
    if len(lengths) != 1:
        raise ValidationError(f"pulse fields differ in length: { {n: len(c) for n, c in cols.items()} }")
    out = np.empty(lengths.pop(), PULSE_DTYPE)
    for n, c in cols.items():
        out[n] = c.astype(bool) if n == "cathodic_first" else c
    return out
