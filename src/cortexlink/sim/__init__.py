"""Seeded synthetic implant: units, waveforms, noise, drift, intent-driven firing.

Importing this subpackage compiles/loads its numba kernels; ``import cortexlink`` does not.
"""

from cortexlink.sim.config import PRESETS, ImplantConfig
from cortexlink.sim.implant import SPIKE_BAND_HZ, GroundTruth, SimulatedImplant

__all__ = ["SimulatedImplant", "ImplantConfig", "PRESETS", "GroundTruth", "SPIKE_BAND_HZ"]
