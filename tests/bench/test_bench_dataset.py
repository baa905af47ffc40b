"""bench.dataset: the simulated sessions of `cortexlink bench dataset` (the build itself is
tests/sorting/test_dataset.py's; a bench run is minutes, not a test)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from cortexlink.bench.dataset import SimulatedSession, simulated_inputs
from cortexlink.core.errors import ConfigError


def test_simulated_inputs_spread_participants_over_days():
    inp = simulated_inputs(5, 16, 2.0, participants=2, seed=3)
    assert [i.session_id for i in inp] == ["sim-0001-day000", "sim-0002-day000", "sim-0001-day001",
                                          "sim-0002-day001", "sim-0001-day002"]
    assert [i.participant for i in inp] == ["sim-0001", "sim-0002"] * 2 + ["sim-0001"]
    assert [i.day for i in inp] == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert [i.source.seed for i in inp] == [3, 4, 3, 4, 3]              # one implant per participant
    assert len({i.fingerprint for i in inp}) == 5
    assert simulated_inputs(5, 16, 2.0, participants=2, seed=3)[0].fingerprint == inp[0].fingerprint
    assert simulated_inputs(5, 16, 3.0, participants=2, seed=3)[0].fingerprint != inp[0].fingerprint
    assert pickle.loads(pickle.dumps(inp[0].source)) == inp[0].source   # travels to a Ray worker
    for kw, msg in ((dict(sessions=0), "sessions"), (dict(channels=2), "channels"), (dict(seconds=0), "seconds"),
                    (dict(participants=0), "participants")):
        args = dict(sessions=2, channels=16, seconds=1.0, participants=1) | kw
        with pytest.raises(ConfigError, match=msg):
            simulated_inputs(args.pop("sessions"), args.pop("channels"), args.pop("seconds"), **args)


def test_materialize_writes_the_session_and_names_its_participant(tmp_path):
    s = SimulatedSession("sim-0001", 2, 0, 8, 0.5)
    rec = s.materialize(tmp_path / "a")
    assert rec.get_num_channels() == 8 and rec.get_num_samples() == 15000 and rec.has_probe()
    assert (tmp_path / "a" / "traces.int16").stat().st_size == 8 * 15000 * 2
    ann = json.loads(rec.get_annotation("cortexlink"))
    assert ann["participant_id"] == "sim-0001" and "day 2" in ann["path"]
    again = s.materialize(tmp_path / "b")                               # the same session twice: same samples
    assert np.array_equal(rec.get_traces(), again.get_traces())
    other = SimulatedSession("sim-0001", 3, 0, 8, 0.5).materialize(tmp_path / "c")
    assert not np.array_equal(rec.get_traces(), other.get_traces())
