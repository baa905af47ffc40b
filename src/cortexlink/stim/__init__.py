"""Stimulation: pulse model, encoders (auditory CIS, touch), the safety interlock, drivers.

Every pulse an encoder asks for passes through the safety interlock
(:mod:`cortexlink.stim.interlock`) before any driver sees it; drivers accept only plans the
interlock approved.
"""

from cortexlink.stim.model import (
    MATERIALS, PULSE_DTYPE, Electrode, StimPlan, as_pulses, biphasic, charge_density_uc_cm2,
    charge_nc, empty_pulses, pulse_end_s, pulse_train, shannon_k,
)

__all__ = [
    "MATERIALS", "PULSE_DTYPE", "Electrode", "StimPlan", "as_pulses", "biphasic",
    "charge_density_uc_cm2", "charge_nc", "empty_pulses", "pulse_end_s", "pulse_train", "shannon_k",
]
