"""`cortexlink bench units-track`: the scoring of matches against the simulated neurons, and the
command's JSON contract on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cortexlink.bench.units_track import ROW_KEYS, score_tracking
from cortexlink.core.errors import ConfigError
from cortexlink.sorting.tracking import SessionUnits


def _days():
    """Three days of four slots: slot 1 gets a new neuron on day 1, slot 2 on day 2."""
    sessions = [SessionUnits(f"d{d}", "P", float(d), ["0", "1", "2", "3"], np.zeros((4, 5, 2)),
                             np.array([[0.0, 0.0], [0.0, 25.0]]), np.zeros((4, 2)), np.ones(4), ["good"] * 4)
                for d in range(3)]
    born = [np.array([0, 0, 0, 0]), np.array([0, 1, 0, 0]), np.array([0, 1, 2, 0])]
    truths = [dict(born_day=b, unit_slot=np.arange(4), shift_um=0.0) for b in born]
    return sessions, truths


def _table(ids):
    rows = [dict(session=f"d{d}", participant="P", unit_id=str(u), tracked_id=ids[d][u], confidence=np.nan,
                 matched_session=None, matched_unit=None, shift_um=np.nan) for d in range(3) for u in range(4)]
    t = pd.DataFrame(rows)
    t.attrs["shifts"] = [dict(session_a="d0", session_b="d1", shift_um=1.5),
                         dict(session_a="d1", session_b="d2", shift_um=-0.5)]
    return t


def test_score_counts_pairs_of_the_same_neuron():
    sessions, truths = _days()
    # the right ids: slot 1's new neuron (day 1) and slot 2's (day 2) get new ids
    right = [["A", "B", "C", "D"], ["A", "E", "C", "D"], ["A", "E", "F", "D"]]
    s = score_tracking(_table(right), sessions, truths)
    # true pairs: slots 0 and 3 on every pair of days (3 + 3), slot 1 days 1-2, slot 2 days 0-1
    assert (s["n_true_pairs"], s["n_pred_pairs"], s["n_correct_pairs"]) == (8, 8, 8)
    assert s["precision"] == s["recall"] == 1.0 and s["n_true_pairs_consecutive"] == 6
    assert s["shift_error_um"] == pytest.approx(1.0) and s["shift_error_max_um"] == pytest.approx(1.5)
    # slot 1 forced to keep its id through the turnover: two wrong pairs (days 0-1 and 0-2)
    forced = [["A", "B", "C", "D"], ["A", "B", "C", "D"], ["A", "B", "F", "D"]]
    s = score_tracking(_table(forced), sessions, truths)
    assert (s["n_pred_pairs"], s["n_correct_pairs"], s["precision"], s["recall"]) == (10, 8, 0.8, 1.0)
    assert s["precision_consecutive"] == pytest.approx(6 / 7, abs=1e-4)      # rounded to 4 places
    # nothing matched: no predicted pair, recall 0
    s = score_tracking(_table([["A", "B", "C", "D"], ["E", "F", "G", "H"], ["I", "J", "K", "L"]]), sessions, truths)
    assert s["n_pred_pairs"] == 0 and s["precision"] is None and s["recall"] == 0.0
    # a unit that stands for no neuron (-1) makes its matches wrong and leaves precision_of_mapped_units
    truths[1]["unit_slot"] = np.array([0, 1, 2, -1])
    s = score_tracking(_table(right), sessions, truths)
    assert s["n_correct_pairs"] == 6 and s["precision_of_mapped_units"] == 1.0 and s["precision"] == 0.75


def test_bench_units_track_json(tmp_path, capsys):
    from cortexlink.cli.main import main

    out = tmp_path / "r.json"
    rc = main(["bench", "units-track", "--days", "2", "--channels", "16", "--seconds", "3", "--json", "--out", str(out)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result and result["benchmark"] == "units-track"
    (row,) = result["results"]
    assert all(k in row for k in ROW_KEYS) and row["units_source"] == "ground_truth" and row["days"] == 2
    assert len(row["n_units_per_day"]) == 2 and row["n_true_pairs"] > 0
    assert [t["min_confidence"] for t in row["by_threshold"]] == [0.3, 0.5, 0.7, 0.9]
    with pytest.raises(ConfigError, match="days must be an integer in \\[2, 60\\]; got 1"):
        from cortexlink.bench.units_track import run
        run(days=1)
