"""Seeded synthetic implant: units, waveforms, noise, drift, intent-driven firing.

Importing this subpackage compiles/loads its numba kernels; ``import cortexlink`` does not.
"""

from cortexlink.sim.config import PRESETS, ImplantConfig
from cortexlink.sim.implant import SPIKE_BAND_HZ, GroundTruth, SimulatedImplant
from cortexlink.sim.participant import ParticipantConfig, ParticipantIntent, SimulatedParticipant

__all__ = ["SimulatedImplant", "ImplantConfig", "PRESETS", "GroundTruth", "SPIKE_BAND_HZ",
           "SimulatedParticipant", "ParticipantConfig", "ParticipantIntent"]
