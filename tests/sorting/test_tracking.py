"""Units across sessions and days: cortexlink.sorting.tracking and `cortexlink units track`.

The sessions are one simulated participant on three days (32 channels x 10 s each, probe384-like:
footprints over neighbouring electrodes, 17 units, 30 % of them replaced each day, the probe
moving by a 10 µm-step random walk), units = the true spike trains with a SortingAnalyzer
(tracking without sorting errors), built once for the module."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sorting import _tracking_match as M
from cortexlink.sorting.tracking import SessionUnits, load_session_units, track_units, write_tracking

DAYS, CHANNELS, SECONDS = 3, 32, 10.0


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    from cortexlink.bench.units_track import simulate_sessions

    folder = tmp_path_factory.mktemp("days")
    sessions, truths = simulate_sessions(days=DAYS, channels=CHANNELS, seconds=SECONDS, day_turnover=0.3,
                                         day_shift_um=10.0, seed=3, folder=folder,
                                         implant_overrides=dict(units_per_channel_p=(0.5, 0.5)))
    return sessions, truths, folder


@pytest.fixture(scope="module")
def tracked(days):
    sessions, truths, _ = days
    return track_units(sessions)


def test_matches_follow_the_simulated_neurons(days, tracked):
    from cortexlink.bench.units_track import score_tracking

    sessions, truths, _ = days
    assert [s.n_units for s in sessions] == [len(t["unit_slot"]) for t in truths] and sessions[0].n_units >= 5
    assert list(tracked.columns) == ["session", "participant", "unit_id", "tracked_id", "confidence",
                                     "matched_session", "matched_unit", "shift_um"]
    assert len(tracked) == sum(s.n_units for s in sessions)
    score = score_tracking(tracked, sessions, truths)
    assert score["n_true_pairs"] > 10
    # measured: precision 0.89, recall 0.97 (consecutive days 0.92 / 0.96); the errors are new
    # neurons taken for the old one in the same place (10 s of data: noisy templates)
    assert score["precision"] >= 0.75 and score["recall"] >= 0.8, score
    assert score["precision_consecutive"] >= 0.8 and score["recall_consecutive"] >= 0.8, score
    first = tracked[tracked["session"] == sessions[0].session]
    assert first["confidence"].isna().all() and first["matched_session"].isna().all()
    assert first["tracked_id"].is_unique and first["tracked_id"].str.fullmatch(r"U\d{4}").all()
    matched = tracked[tracked["matched_session"].notna()]
    assert ((matched["confidence"] >= 0.5) & (matched["confidence"] <= 1)).all()
    for _, g in tracked.groupby("session"):               # one unit per id per session
        assert g["tracked_id"].is_unique


def test_turnover_gives_new_ids(days, tracked):
    sessions, truths, _ = days
    # on the simulated days: most neurons that appeared on a day get an id not seen before (a new
    # neuron in the same place with a waveform and amplitude like the old one's can pass for it)
    n_new = n_new_id = 0
    for d in range(1, DAYS):
        s, t = sessions[d], truths[d]
        earlier = set(tracked.loc[tracked["session"].isin([x.session for x in sessions[:d]]), "tracked_id"])
        rows = tracked[tracked["session"] == s.session].set_index("unit_id")
        for u, slot in zip(s.unit_ids, t["unit_slot"]):
            if t["born_day"][slot] == d:                   # a neuron that appeared today
                n_new += 1
                n_new_id += rows.loc[u, "tracked_id"] not in earlier
    assert n_new >= 5 and n_new_id >= 0.6 * n_new
    # a session where a third of the units are different neurons (another unit's waveform at
    # twice its amplitude, same place): exactly those get new ids, the others keep theirs
    s0 = sessions[0]
    U = s0.n_units
    swapped = np.arange(U) % 3 == 0
    t1 = s0.templates_uv.copy()
    t1[swapped] = 2.0 * s0.templates_uv[(np.flatnonzero(swapped) + 1) % U]
    s1 = SessionUnits("next", s0.participant, None, [f"n{u}" for u in s0.unit_ids], t1, s0.channel_positions_um,
                      s0.unit_positions_um, s0.firing_rate_hz, s0.labels)
    table = track_units([s0, s1])
    ids0 = dict(zip(s0.unit_ids, table["tracked_id"][:U]))
    second = table[table["session"] == "next"]
    kept = second["tracked_id"].to_numpy() == np.array([ids0[u] for u in s0.unit_ids])
    assert np.array_equal(kept, ~swapped)
    assert second.loc[~swapped, "confidence"].min() > 0.9 and second.loc[swapped, "confidence"].isna().all()


def test_a_known_shift_is_estimated(days, tracked):
    sessions, truths, _ = days
    for d in tracked.attrs["shifts"]:
        a = [s.session for s in sessions].index(d["session_a"])
        b = [s.session for s in sessions].index(d["session_b"])
        true = truths[b]["shift_um"] - truths[a]["shift_um"]
        assert abs(d["shift_um"] - true) < 4.0, (d, true)
    # a pure translation of the templates of one session by 17 µm along the probe
    s = sessions[0]
    index = M.shift_index(s.channel_positions_um, 17.0)
    moved = M.shift_values(s.templates_uv, index)
    shift, score, _, _ = M.estimate_shift(M.footprints(s.templates_uv), M.footprints(moved),
                                          s.channel_positions_um, 60.0)
    assert shift == pytest.approx(17.0, abs=1.5) and score > 0.5


def test_different_participants_are_never_matched(days):
    sessions, _, _ = days
    other = [SessionUnits(s.session + "_p2", "P2", s.order_key, s.unit_ids, s.templates_uv, s.channel_positions_um,
                          s.unit_positions_um, s.firing_rate_hz, s.labels) for s in sessions[:2]]
    mixed = [sessions[0], other[0], sessions[1], other[1]]
    table = track_units(mixed)
    p2 = table[table["participant"] == "P2"]
    assert p2["matched_session"].dropna().str.endswith("_p2").all() and p2["matched_session"].notna().any()
    assert not set(p2["tracked_id"]) & set(table.loc[table["participant"] != "P2", "tracked_id"])


def test_bad_input_is_refused(tmp_path, days):
    sessions, _, _ = days
    with pytest.raises(ConfigError, match=f"{tmp_path}.*is not a folder `cortexlink sort` wrote"):
        load_session_units(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ConfigError, match="summary.json"):
        load_session_units(tmp_path)
    with pytest.raises(ConfigError, match="labels must be among"):
        load_session_units(tmp_path, labels=("great",))
    with pytest.raises(ConfigError, match="session names must be distinct"):
        track_units([sessions[0], sessions[0]])
    with pytest.raises(ConfigError, match="min_confidence must be a number in \\(0, 1\\); got 1.5"):
        track_units(sessions, min_confidence=1.5)
    with pytest.raises(ConfigError, match="max_gap_sessions must be an integer >= 1; got 0"):
        track_units(sessions, max_gap_sessions=0)
    s0 = sessions[0]
    other = SessionUnits("other_probe", s0.participant, None, s0.unit_ids, s0.templates_uv[:, :, :16],
                         s0.channel_positions_um[:16], s0.unit_positions_um, s0.firing_rate_hz, s0.labels)
    with pytest.raises(ConfigError, match="different electrode positions"):
        track_units([s0, other])
    with pytest.raises(ConfigError, match="templates_uv must be"):
        SessionUnits("s", None, None, ["a"], np.zeros((2, 5, 3)), np.zeros((3, 2)), np.zeros((1, 2)), [1.0], ["good"])


def test_cli_end_to_end_on_two_sort_folders(days, tmp_path, capsys):
    import pandas as pd
    import spikeinterface.core as si

    from cortexlink.cli.main import main
    from cortexlink.sorting.pipeline import SUMMARY_FORMAT
    from cortexlink.sorting.sorters import preprocess_recording

    sessions, truths, folder = days
    dirs = []
    for d in range(2):
        s = sessions[d]
        out = tmp_path / f"sorted_{s.session}"
        out.mkdir()
        # a sort folder as `cortexlink sort` writes it (the sorter replaced by the true spike trains)
        rec = preprocess_recording(truths[d]["recording"])
        job = dict(n_jobs=1, chunk_duration="1s", progress_bar=False)
        with warnings.catch_warnings():          # an in-memory truth has no provenance to save
            warnings.filterwarnings("ignore", "The extractor is not serializable", UserWarning)
            si.NumpyFolderSorting.write_sorting(truths[d]["gt_sorting"].remove_empty_units(), out / "sorting")
        sorting = si.load(out / "sorting")
        an = si.create_sorting_analyzer(sorting, rec, format="binary_folder", folder=out / "analyzer", sparse=True,
                                        job_kwargs=job)
        an.compute("random_spikes", max_spikes_per_unit=200, seed=0)
        an.compute("templates", **job)
        an.compute("unit_locations")
        labels = ["good"] * (s.n_units - 1) + ["noise"]
        pd.DataFrame({"firing_rate": s.firing_rate_hz, "label": labels, "x_um": 0.0, "y_um": 0.0},
                     index=pd.Index(s.unit_ids, name="unit_id")).to_csv(out / "metrics.csv")
        (out / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT, "recording": {
            "source": {"participant_id": "P1", "format": "raw"}}}))
        dirs.append(out)
    su = load_session_units(dirs[0])
    assert su.participant == "P1" and su.n_units == sessions[0].n_units - 1 and su.session == dirs[0].name
    assert su.templates_uv.shape[2] == CHANNELS
    assert load_session_units(dirs[0], labels=("good", "mua", "noise")).n_units == sessions[0].n_units
    out = tmp_path / "tracked"
    rc = main(["units", "track", str(dirs[0]), str(dirs[1]), "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_sessions"] == 2 and summary["n_units"] == 2 * (sessions[0].n_units - 1)
    for name in ("tracking.csv", "tracking.json", "tracking.png", "tracking.html"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "tracking.csv")
    assert set(table["session"]) == {dirs[0].name, dirs[1].name}
    assert summary["n_matches"] == table["matched_session"].notna().sum() > 0
    # a second run into the same (now full) folder is refused; a folder that is not a sort output too
    assert main(["units", "track", str(dirs[0]), str(dirs[1]), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["units", "track", str(dirs[0]), str(tmp_path), "--out", str(tmp_path / "t2")]) == 2
    assert "is not a folder `cortexlink sort` wrote" in capsys.readouterr().err
    # in a data set, sessions without a participant are tracked each on its own and written as None
    from cortexlink.sorting.datacard import track

    ds = tmp_path / "ds"
    (ds / "sessions").mkdir(parents=True)
    for d in dirs:
        (ds / "sessions" / d.name).symlink_to(d, target_is_directory=True)
    table, info = track(ds, [{"session_id": d.name, "participant": None, "day": float(k)} for k, d in enumerate(dirs)])
    assert info["available"] and table["matched_session"].isna().all()          # never matched to each other
    assert table["participant"].isna().all()
    listed = json.loads((ds / "tracking" / "tracking.json").read_text())["sessions"]
    assert [o["participant"] for o in listed] == [None, None], listed


def test_write_tracking_outputs(days, tracked, tmp_path):
    sessions, truths, _ = days
    summary = write_tracking(tmp_path / "out", tracked, sessions)
    data = json.loads((tmp_path / "out" / "tracking.json").read_text())
    assert data["n_units"] == len(tracked) == len(data["units"])
    assert [d["session"] for d in data["sessions"]] == [s.session for s in sessions]
    assert data["sessions"][2]["cumulative_shift_um"] == pytest.approx(
        data["sessions"][1]["shift_vs_previous_um"] + data["sessions"][2]["shift_vs_previous_um"], abs=0.02)
    # a session without units is listed (0 units) and the next one is matched across it
    s0, s1 = sessions[0], sessions[1]
    empty = SessionUnits("empty", s0.participant, 0.5, [], np.zeros((0,) + s0.templates_uv.shape[1:]),
                         s0.channel_positions_um, np.zeros((0, 2)), [], [])
    table = track_units([s0, empty, s1])
    assert (table.loc[table["session"] == s1.session, "matched_session"] == s0.session).sum() >= 0.6 * s1.n_units
    gap = write_tracking(tmp_path / "gap", table, [s0, empty, s1])["sessions"]
    assert [(d["session"], d["n_units"]) for d in gap] == [(s0.session, s0.n_units), ("empty", 0),
                                                           (s1.session, s1.n_units)]
    assert data["sessions"][0]["shift_vs_previous_um"] is None and data["sessions"][1]["shift_vs_previous_um"] is not None
    assert sum(d["n_new"] for d in data["sessions"]) == summary["n_tracked_ids"]
    assert "tracking.png" in (tmp_path / "out" / "tracking.html").read_text()
