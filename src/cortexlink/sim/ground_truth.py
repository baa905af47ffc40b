"""What a :class:`~cortexlink.sim.SimulatedImplant` really did: :class:`GroundTruth`, and the
growing buffers and read-only copies the implant builds it from."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["GroundTruth"]


class _Growing:
    """Append-only numpy buffer with amortised doubling (ground-truth storage)."""

    def __init__(self, dtype: Any, width: int | None = None, capacity: int = 1024) -> None:
        self._shape_tail = () if width is None else (width,)
        self._a = np.empty((capacity,) + self._shape_tail, dtype)
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        m = len(x)
        if self.n + m > len(self._a):
            new = np.empty((max(2 * len(self._a), self.n + m),) + self._shape_tail, self._a.dtype)
            new[:self.n] = self._a[:self.n]
            self._a = new
        self._a[self.n:self.n + m] = x
        self.n += m

    def view(self, n: int | None = None) -> np.ndarray:
        return self._a[:self.n if n is None else n]


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the simulated implant really did, up to ``n_samples``.

    Attributes
    ----------
    n_samples : int
        Ground truth covers samples ``[0, n_samples)``.
    fs_hz : float
        Sampling rate.
    spike_samples : ndarray (n_spikes,), int64
        Sample of each single-unit spike's **negative peak (trough)**, sorted.
    spike_units : ndarray (n_spikes,), int32
        Unit index of each spike.
    unit_channel : ndarray (n_units,), int32
        Channel each unit is recorded on.
    unit_snr : ndarray (n_units,)
        SNR as measured on a band-passed recording: |trough| of the unit's template after a
        zero-phase order-2 Butterworth 250-5000 Hz band-pass, over the spike-band (250-5000 Hz)
        RMS of the channel's background noise. Drawn from ``ImplantConfig.snr_range``.
    unit_snr_raw : ndarray (n_units,)
        |raw (unfiltered) trough amplitude| / the same noise RMS (about 10% above ``unit_snr``).
    unit_amplitude_uv : ndarray (n_units,)
        |trough amplitude| in µV.
    unit_templates_uv : ndarray (n_units, n_template), float32
        Each unit's waveform in µV; the trough is at ``template_trough_idx``.
    template_trough_idx : int
        Index of the trough within a template (samples before the trough).
    unit_preferred_direction : ndarray (n_units, 2)
        Unit vectors of the preferred velocity direction.
    unit_baseline_hz, unit_depth_hz : ndarray (n_units,)
        Baseline rate (before drift) and cosine-tuning depth.
    unit_click_tuned : ndarray (n_units,), bool
        Units whose rate rises with click intent.
    unit_click_depth_hz : ndarray (n_units,)
        Rate added at click intent 1 (0 for units not click-tuned).
    unit_refractory_ms : ndarray (n_units,)
        Absolute refractory period.
    unit_lost_sample : ndarray (n_units,), int64
        Block start at which a unit was lost (chronic non-stationarity), -1 if still present.
    channel_noise_uv : ndarray (n_channels,)
        Spike-band RMS of each channel's background noise (the SNR denominator).
    dead_channels, saturating_channels : ndarray of int
        Indices of the simulated faulty channels (not marked bad in the channel map).
    intent_samples : ndarray (n_blocks,), int64
        Start sample of each internal block; the intent below held from there on.
    intent_velocity : ndarray (n_blocks, 2)
        Velocity intent (vx, vy) used for each block.
    intent_click : ndarray (n_blocks,)
        Click intent used for each block.
    artifact_samples : ndarray (n_artifacts,), int64
        Onset sample of each artefact.
    artifact_peak_uv : ndarray (n_artifacts,)
        Signed peak amplitude of each artefact before per-channel spatial weighting.
    block_size : int
        Internal block size in samples.
    spike_amplitude_scale : ndarray (n_spikes,), float32
        Factor on each spike's waveform (burst attenuation x amplitude jitter; all 1 without them).
    unit_position_um : ndarray (n_units, 2)
        Rest position of each unit (at its channel's electrode without a footprint).
    unit_bursting : ndarray (n_units,), bool
        Units that fire in bursts.
    footprint_channels : ndarray (n_units, n_candidates), int32
        Channels each unit may be seen on (-1 = none), its own channel first.
    footprint_gains : ndarray (n_units, n_candidates), float32
        Gain of each unit on those channels at rest (1 on its own channel; 0 = not seen).
    probe_drift_um, probe_drift_period_s, probe_drift_phase : float
        The rigid drift along y: see :meth:`drift_offset_um`.
    unit_born_day : ndarray (n_units,), int64
        The recording day on which the unit now in each slot appeared (0 = built with the
        implant; day-to-day turnover sets it to the day of the replacement). Unit ``i`` here
        (day ``b``) is the same neuron as unit ``i`` on day ``a < b`` iff ``unit_born_day[i] <= a``.
    day_shift_total_um : float
        The day's rigid displacement of every unit along y (``ImplantConfig.day_shift_um``), part
        of :meth:`drift_offset_um`.
    """

    n_samples: int
    fs_hz: float
    spike_samples: np.ndarray
    spike_units: np.ndarray
    unit_channel: np.ndarray
    unit_snr: np.ndarray
    unit_snr_raw: np.ndarray
    unit_amplitude_uv: np.ndarray
    unit_templates_uv: np.ndarray
    template_trough_idx: int
    unit_preferred_direction: np.ndarray
    unit_baseline_hz: np.ndarray
    unit_depth_hz: np.ndarray
    unit_click_tuned: np.ndarray
    unit_click_depth_hz: np.ndarray
    unit_refractory_ms: np.ndarray
    unit_lost_sample: np.ndarray
    channel_noise_uv: np.ndarray
    dead_channels: np.ndarray
    saturating_channels: np.ndarray
    intent_samples: np.ndarray
    intent_velocity: np.ndarray
    intent_click: np.ndarray
    artifact_samples: np.ndarray
    artifact_peak_uv: np.ndarray
    block_size: int
    spike_amplitude_scale: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(0, np.float32))
    unit_position_um: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    unit_bursting: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, bool))
    footprint_channels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 1), np.int32))
    footprint_gains: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 1), np.float32))
    probe_drift_um: float = 0.0
    probe_drift_period_s: float = 1200.0
    probe_drift_phase: float = 0.0
    unit_born_day: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    day_shift_total_um: float = 0.0

    @property
    def n_units(self) -> int:
        return len(self.unit_channel)

    @property
    def spike_channels(self) -> np.ndarray:
        """Channel of each spike."""
        return self.unit_channel[self.spike_units]

    def unit_spike_samples(self, unit: int) -> np.ndarray:
        """Trough samples of one unit's spikes."""
        return self.spike_samples[self.spike_units == unit]

    def intent_at(self, samples: Any) -> tuple[np.ndarray, np.ndarray]:
        """Velocity (n, 2) and click (n,) intent in force at each given sample index."""
        idx = np.searchsorted(self.intent_samples, np.asarray(samples), side="right") - 1
        idx = np.clip(idx, 0, max(len(self.intent_samples) - 1, 0))
        return self.intent_velocity[idx], self.intent_click[idx]

    def drift_offset_um(self, samples: Any) -> np.ndarray:
        """Displacement (µm, along y) of every unit at the given sample indices: the day's shift
        plus the within-session drift (0 without either)."""
        t_s = np.asarray(samples, np.float64) / self.fs_hz
        return self.day_shift_total_um + self.probe_drift_um * np.sin(
            2 * np.pi * t_s / self.probe_drift_period_s + self.probe_drift_phase)

    def unit_position_at(self, sample: int) -> np.ndarray:
        """(n_units, 2) positions of the units (µm) at ``sample``, drift included."""
        return self.unit_position_um + np.array([0.0, float(self.drift_offset_um(sample))])
