"""The independent checker's plan-window check with one bound given (find_unsafe)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.stim import biphasic
from cortexlink.stim.limits import SafetyLimits
from cortexlink.stim.verify import find_unsafe

_LIMITS = {"version": 1, "participant": "T", "electrodes": [{"ids": [0, 3], "area_um2": 2000.0}]}


@pytest.mark.req("SR-24")
@pytest.mark.parametrize("bounds, flagged", [
    ({}, []),                                                   # no window: no window check
    ({"t_start_s": 0.015}, [0]),                                # starts before the window
    ({"t_end_s": 0.025}, [1]),                                  # ends after the window
    ({"t_start_s": 0.015, "t_end_s": 0.025}, [0, 1]),
    ({"t_start_s": 0.0, "t_end_s": 1.0}, []),
])
def test_each_given_bound_is_checked_alone(bounds, flagged):
    # two safe pulses on two electrodes, at 10 ms and 24.9 ms; each ends 0.4 ms after its onset
    p = np.concatenate([biphasic(0, 0.010, 40.0, 200.0), biphasic(1, 0.0249, 40.0, 200.0)])
    assert find_unsafe(p, SafetyLimits.from_dict(_LIMITS), **bounds) == [(i, "outside_window") for i in flagged]
