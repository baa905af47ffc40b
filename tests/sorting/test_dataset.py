"""cortexlink.sorting.dataset: a data set from several sessions on Ray (issue 15 §4).

One module-scoped Ray instance (2 CPUs) and one build, checked by several tests: four tiny
sessions (8 channels x 4 s), one of them a corrupt file (retried, then excluded) and one whose
worker the test SIGKILLs mid-task (Ray retries it). Then a rerun (nothing recomputed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _sortdata import write_raw  # noqa: E402

from cortexlink.core.errors import ConfigError, ValidationError  # noqa: E402
from cortexlink.sorting._dataset_tasks import path_fingerprint  # noqa: E402
from cortexlink.sorting.dataset import SessionInput, build_dataset, inputs_from_paths, ray_session  # noqa: E402

SORTER = "mountainsort5"     # the cheapest here in a fresh worker process (8.7 s cold, simple 16.6 s: no numba compilation)
BOUND_S = 240.0            # every wait is bounded


class KillOnce:
    """A RecordingSource whose first attempt writes its worker's pid and waits (bounded) to be
    killed; once the test has killed it, the retry returns the recording at once."""

    def __init__(self, path: str, flag_dir: str) -> None:
        self.path, self.flag_dir = path, flag_dir

    def materialize(self, folder: Path) -> str:
        flags = Path(self.flag_dir)
        if not (flags / "killed").exists():
            (flags / "pid.tmp").write_text(str(os.getpid()))
            os.replace(flags / "pid.tmp", flags / "pid")
            t = time.monotonic()
            while not (flags / "killed").exists() and time.monotonic() - t < BOUND_S:
                time.sleep(0.05)
        return self.path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import tests/
    root = tmp_path_factory.mktemp("dataset")
    paths = []
    for k in range(3):
        d = root / f"in{k}"
        d.mkdir()
        paths.append(write_raw(d, n_channels=8, seconds=4.0, seed=k % 2)[0])
    bad = root / "bad.nwb"
    bad.write_bytes(b"this is not an HDF5 file" * 100)
    flags = root / "flags"
    flags.mkdir()
    inputs = [SessionInput("s0", "P1", 0.0, str(paths[0]), path_fingerprint(paths[0])),
              SessionInput("s1", "P1", 1.0, str(paths[1]), path_fingerprint(paths[1])),
              SessionInput("s2", "P1", 2.0, KillOnce(str(paths[2]), str(flags)), "killonce-s2"),
              SessionInput("bad", "P1", 3.0, str(bad), path_fingerprint(bad))]
    out = root / "ds"
    kw = dict(sorter=SORTER, workers=2, max_failures=2, progress=False, pca_metrics=False, licence="CC0-1.0",
              name="test set")
    with ray_session(2, None):
        result: dict = {}

        def go() -> None:
            try:
                result["card"] = build_dataset(inputs, out, **kw)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                result["error"] = exc

        th = threading.Thread(target=go, daemon=True)
        th.start()
        t = time.monotonic()
        while not (flags / "pid").exists() and th.is_alive() and time.monotonic() - t < BOUND_S:
            time.sleep(0.05)
        assert (flags / "pid").exists(), result.get("error")
        victim = int((flags / "pid").read_text())
        os.kill(victim, signal.SIGKILL)
        (flags / "killed").write_text("1")
        th.join(BOUND_S)
        assert not th.is_alive(), "the build did not finish"
        if "error" in result:
            raise result["error"]
        done_mtimes = {p.parent.name: p.stat().st_mtime_ns for p in (out / "sessions").glob("*/done.json")}
        again = build_dataset(inputs, out, **kw)
        after = {p.parent.name: p.stat().st_mtime_ns for p in (out / "sessions").glob("*/done.json")}
    return dict(out=out, card=result["card"], again=again, victim=victim, mtimes=(done_mtimes, after), bad=bad)


def test_build_end_to_end(built):
    import pandas as pd
    import pynwb
    from nwbinspector import Importance, inspect_nwbfile

    from cortexlink.sorting.datacard import verify_sha256sums

    out, card = built["out"], built["card"]
    assert json.loads((out / "datacard.json").read_text())["counts"] == card["counts"]
    assert (out / "datacard.html").read_text().count("<img") == 2          # SNR and firing-rate plots
    c = card["counts"]
    assert (c["sessions"], c["sessions_input"], c["participants"], c["channels_total"]) == (3, 4, 1, 24)
    idx = pd.read_parquet(out / "units.parquet")
    done = [json.loads((out / "sessions" / s / "done.json").read_text()) for s in ("s0", "s1", "s2")]
    assert len(idx) == c["units"] == sum(d["n_units"] for d in done) > 0
    assert [d["memory_share"] for d in done] == [0.5] * 3      # 2 sessions at once: each sizes its cache for half
    assert sum(c["units_by_label"].values()) == c["units"]
    for col in ("participant", "session", "day", "unit_id", "tracked_id", "tracking_confidence", "main_channel",
                "x_um", "y_um", "label", "snr", "firing_rate", "isi_violations_ratio"):
        assert col in idx.columns, col
    tracked = idx[idx["tracked_id"] != ""]
    assert c["tracked_units"] == tracked["tracked_id"].nunique() > 0
    assert card["tracking"]["available"]
    # s0 and s2 are the same recording (seed 0): their good units are tracked across sessions
    assert c["tracked_units_in_several_sessions"] >= 1
    for sid in ("s0", "s1", "s2"):
        f = out / "nwb" / "P1" / f"{sid}.nwb"
        with pynwb.NWBHDF5IO(str(f), "r") as io:
            df = io.read().units.to_dataframe()
        rows = idx[idx["session"] == sid].set_index("unit_id")
        assert len(df) == len(rows)
        assert dict(zip(df["sorter_unit_id"].astype(str), df["tracked_id"])) == rows["tracked_id"].to_dict()
    f = out / "nwb" / "P1" / "s0.nwb"
    crit = [m for m in inspect_nwbfile(nwbfile_path=str(f)) if m.importance.value >= Importance.CRITICAL.value]
    assert not crit, [(m.check_function_name, m.message) for m in crit]
    assert verify_sha256sums(out) == []
    listed = {ln.split("  ", 1)[1] for ln in (out / "SHA256SUMS").read_text().splitlines()}
    assert {"units.parquet", "datacard.json", "nwb/P1/s1.nwb", "sessions/s1/done.json"} <= listed
    prov = card["provenance"]
    assert prov["sorter"] == SORTER and prov["versions"]["ray"] and card["licence"] == "CC0-1.0"
    assert card["build"]["n_sorted"] == 3 and card["build"]["sessions_per_hour"] > 0
    assert set(card["days"]["P1"]) >= {"first", "last", "span_days"} and card["days"]["P1"]["span_days"] == 2.0


def test_corrupt_session_is_retried_then_excluded(built):
    out, card = built["out"], built["card"]
    (ex,) = card["excluded"]["sessions"]
    assert ex["session_id"] == "bad" and ex["attempts"] == 2
    assert str(built["bad"]) in ex["reason"] or "bad.nwb" in ex["reason"], ex["reason"]
    assert not (out / "sessions" / "bad").exists() and not (out / "nwb" / "P1" / "bad.nwb").exists()
    events = [json.loads(ln) for ln in (out / "logs" / "bad.jsonl").read_text().splitlines()]
    first = [e["event"] for e in events if e["build"] == events[0]["build"]]
    assert first == ["start", "error", "start", "error"]
    assert len(events) == 8 and built["again"]["excluded"]["sessions"][0]["attempts"] == 2   # the rerun tries again


def test_killed_worker_session_completes_once(built):
    out = built["out"]
    events = [json.loads(ln) for ln in (out / "logs" / "s2.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[0]["pid"] == built["victim"] != starts[1]["pid"]
    assert [e["event"] for e in events][-1] == "done"
    assert sorted(p.name for p in (out / "sessions").iterdir()) == ["s0", "s1", "s2"]
    assert sorted(p.name for p in (out / "nwb" / "P1").iterdir()) == ["s0.nwb", "s1.nwb", "s2.nwb"]
    assert not (out / "work").exists() or not any((out / "work").iterdir())
    assert json.loads((out / "sessions" / "s2" / "done.json").read_text())["worker_pid"] == starts[1]["pid"]


def test_rerun_recomputes_nothing(built):
    before, after = built["mtimes"]
    assert before == after and set(before) == {"s0", "s1", "s2"}
    again = built["again"]
    assert again["build"]["n_reused"] == 3 and again["build"]["n_sorted"] == 0
    assert again["counts"] == built["card"]["counts"]
    assert [e["session_id"] for e in again["excluded"]["sessions"]] == ["bad"]    # tried again, still bad


def test_inputs_and_refusals(tmp_path):
    (tmp_path / "recs").mkdir()
    write_raw(tmp_path / "recs", n_channels=8, seconds=1.0)
    found = inputs_from_paths([tmp_path / "recs"])
    assert [i.session_id for i in found] == ["rec"] and found[0].participant is None
    assert found[0].fingerprint == inputs_from_paths([tmp_path / "recs" / "rec.raw"])[0].fingerprint
    with pytest.raises(ValidationError, match="missing"):
        inputs_from_paths([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="holds no session"):
        inputs_from_paths([tmp_path / "empty"])
    with pytest.raises(ValidationError, match="twice"):
        inputs_from_paths([tmp_path / "recs", tmp_path / "recs" / "rec.raw"])
    with pytest.raises(ValidationError, match="at least one session"):
        build_dataset([], tmp_path / "o")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a data set folder"):
        build_dataset(found, tmp_path / "full", sorter=SORTER)
    with pytest.raises(ConfigError, match="max_failures"):
        build_dataset(found, tmp_path / "o2", max_failures=0)
    with pytest.raises(ConfigError, match="session_id"):
        SessionInput("../x", None, None, "p", "f")


def test_cli_refusals(tmp_path, capsys):
    from cortexlink.cli.main import main

    assert main(["dataset", "build", "--out", str(tmp_path / "o")]) == 2
    assert "needs INPUT paths or --catalogue" in capsys.readouterr().err
    assert main(["dataset", "build", str(tmp_path / "nope.nwb"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.nwb" in capsys.readouterr().err
    assert main(["dataset", "build", "--participant", "P1", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--participant needs --catalogue" in capsys.readouterr().err
    assert main(["dataset", "build", "--catalogue", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")]) == 2
    assert "no such catalogue" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
