"""Recording days in the simulator: each unit's birth day and the day-to-day shift of the probe."""

import hashlib

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sim import ImplantConfig, SimulatedImplant

#: sha256 of 1 s of samples + the spike truth + templates, computed on the simulator *before*
#: unit_born_day and day_shift_um existed (same machine, same library versions): day_shift_um = 0
#: must leave every output bit-identical.
BEFORE = {
    ("tiny", (("day", 3),)): "1be606b6c388f408fe141c11be310216234a83cba6aa1954a52d33cdb7a30875",
    ("probe384", (("n_channels", 64), ("day", 2), ("day_turnover", 0.3))):
        "c2fdbb28d9d8acc2eb7ff99b6a9eff49416a6d0374cb6bad6b75473a6e2db495",
}


def _digest(imp: SimulatedImplant) -> str:
    x = imp.read(int(imp.fs_hz)).data
    gt = imp.ground_truth()
    h = hashlib.sha256(x.tobytes())
    h.update(gt.spike_samples.tobytes())
    h.update(gt.spike_units.tobytes())
    h.update(np.ascontiguousarray(gt.unit_templates_uv).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("key", list(BEFORE))
def test_outputs_without_a_day_shift_are_those_before_it_existed(key):
    preset, over = key
    imp = SimulatedImplant.from_preset(preset, **dict(over))
    assert imp.config.day_shift_um == 0.0
    assert _digest(imp) == BEFORE[key]


def test_born_day_marks_each_days_replacements():
    base = dict(n_channels=64, seed=2, day_turnover=0.2)
    born = [SimulatedImplant.from_preset("probe384", day=d, **base).unit_born_day for d in range(4)]
    assert np.all(born[0] == 0)
    for d in range(1, 4):
        imp = SimulatedImplant.from_preset("probe384", day=d, **base)
        assert np.array_equal(imp.ground_truth(0).unit_born_day, born[d])
        new = born[d] == d
        assert np.array_equal(born[d][~new], born[d - 1][~new])       # the others keep their birth day
        assert np.array_equal(new, born[d] > born[d - 1])
        # a unit born on day d has a new template; one born before keeps its waveform shape
        t_prev = SimulatedImplant.from_preset("probe384", day=d - 1, **base).ground_truth(0).unit_templates_uv
        t_now = imp.ground_truth(0).unit_templates_uv
        assert np.allclose(t_prev[~new], t_now[~new]) and not np.any(
            [np.allclose(a, b) for a, b in zip(t_prev[new], t_now[new])])
    assert np.array_equal(born[3] > 0, SimulatedImplant.from_preset("probe384", day=3, **base).units_replaced)
    assert (born[3] > 0).any() and (born[3] == 0).any()


def test_day_shift_is_a_seeded_random_walk_applied_to_the_footprints():
    base = dict(n_channels=64, seed=4, day_shift_um=20.0, day_turnover=0.0)
    totals = [SimulatedImplant.from_preset("probe384", day=d, **base).day_shift_total_um for d in range(5)]
    assert totals[0] == 0.0 and len(set(totals[1:])) == 4
    again = SimulatedImplant.from_preset("probe384", day=3, **base)
    assert again.day_shift_total_um == totals[3]
    # each day's step is its own draw: a different sigma scales the same walk
    half = SimulatedImplant.from_preset("probe384", day=3, **dict(base, day_shift_um=10.0)).day_shift_total_um
    assert half == pytest.approx(totals[3] / 2)
    gt = again.ground_truth(0)
    assert gt.day_shift_total_um == totals[3]
    assert gt.drift_offset_um([0, 1000])[0] == pytest.approx(totals[3])
    # the footprint gains are those of units moved by the day's shift
    from cortexlink.sim._sorting_realism import footprint_gains

    g = footprint_gains(again.channel_map.positions_um, gt.unit_position_um, gt.unit_channel,
                        np.asarray(again._fp_ch), 30.0, totals[3])
    assert np.allclose(again._fp_gain, g)
    day0 = SimulatedImplant.from_preset("probe384", day=3, **dict(base, day_shift_um=0.0))
    assert not np.allclose(day0._fp_gain[:, 0], again._fp_gain[:, 0])


def test_day_shift_needs_a_footprint_and_a_range():
    with pytest.raises(ConfigError, match="day_shift_um.*footprint_um"):
        ImplantConfig(day_shift_um=5.0)
    with pytest.raises(ConfigError, match="day_shift_um"):
        ImplantConfig(footprint_um=30.0, day_shift_um=500.0)
