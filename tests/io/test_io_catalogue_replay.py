"""`cortexlink record` → replay equals the live session; the SQLite catalogue; bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.io.catalogue import Catalogue
from cortexlink.io.replay import replay
from cortexlink.io.session_log import SessionReader


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    db = d / "cat.sqlite"
    r = _cli("record", "--sim", "--channels", "48", "--seconds", "8", "--seed", "2", "--out", str(d / "s1"),
             "--catalogue", str(db), "--json")
    assert r.returncode == 0, r.stderr
    return d, db, json.loads(r.stdout)


@pytest.mark.req("SR-32")
def test_record_writes_every_stream(recorded):
    d, _db, out = recorded
    assert out["state"] == "closed"
    assert set(out["streams"]) >= {"raw", "features", "cursor", "decoder", "intent", "events"}
    rdr = SessionReader(d / "s1")
    assert rdr.channel_map.n_channels == 48 and rdr.fs_hz == 30000.0
    m = rdr.manifest
    assert m["participant_id"] == "sim-0001" and m["seeds"] == {"seed": 2}
    assert m["config"]["blocks"][0]["kind"] == "calibration" and m["dsp"]["bin_ms"] == 20.0
    kinds = {e["kind"] for e in rdr.events()}
    assert {"block_start", "block_end", "task", "decoder"} <= kinds
    assert sorted(p.name for p in (d / "s1" / "decoders").iterdir()) == ["decoder-click-v1.npz", "decoder-v1.npz"]
    live = [e for e in rdr.events() if e["kind"] == "decoder"]
    assert sorted(e["decoder_class"] for e in live) == ["ClickDecoder", "KalmanFilter"]
    s, raw = rdr.read_array("raw")
    np.testing.assert_array_equal(s, np.arange(s.size))      # contiguous from sample 0, warm-up included


@pytest.mark.req("SR-32")
def test_replay_reproduces_features_and_decoder_outputs(recorded):
    d, _db, _ = recorded
    r = replay(d / "s1")
    assert r["compare"]["features"]["equal"], r["compare"]["features"]
    assert r["compare"]["decoder"]["equal"], r["compare"]["decoder"]
    assert r["compare"]["decoder"]["rows_compared"] > 100
    # a different extractor setting would not reproduce them: the comparison can fail
    rdr = SessionReader(d / "s1")
    _, feats = rdr.read_array("features")
    assert np.isfinite(feats).any() and r["features"]["data"].shape == feats.shape
    cli = _cli("replay", str(d / "s1"), "--json", "--seconds", "3")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["compare"]["features"]["equal"]


def test_replay_realtime_is_paced(recorded):
    d, _db, _ = recorded
    r = replay(d / "s1", realtime=True, speed=8.0, seconds=2.0, compare=False)
    assert r["seconds"] == pytest.approx(2.0, abs=0.03)
    assert r["wall_s"] >= 2.0 / 8.0 * 0.9


@pytest.mark.req("SR-52")
def test_replay_bad_input(tmp_path):
    with pytest.raises(ValidationError, match=r"x\.txt: replay takes a session folder .* an \.nwb file"):
        replay(tmp_path / "x.txt")


@pytest.mark.req("SR-41")
def test_catalogue_list_show_verify(recorded, tmp_path):
    d, db, out = recorded
    ls = _cli("sessions", "--db", str(db), "list", "--json")
    rows = json.loads(ls.stdout)
    assert [r["session_id"] for r in rows] == [out["session_id"]]
    assert rows[0]["n_channels"] == 48 and rows[0]["seconds"] > 8
    show = json.loads(_cli("sessions", "--db", str(db), "show", out["session_id"][:12], "--json").stdout)
    assert any(f["relpath"] == "streams/raw.clog" for f in show["files"])
    v = _cli("sessions", "--db", str(db), "verify")
    assert v.returncode == 0 and "ok" in v.stdout
    # a copy of the session with one changed byte fails verification, naming the file
    import shutil
    shutil.copytree(d / "s1", tmp_path / "copy")
    db2 = tmp_path / "c.sqlite"
    with Catalogue(db2) as cat:
        sid = cat.register(tmp_path / "copy")
        p = tmp_path / "copy" / "streams" / "cursor.clog"
        b = bytearray(p.read_bytes())
        b[-1] ^= 1
        p.write_bytes(bytes(b))
        res = cat.verify(sid)
        assert not res[0]["ok"] and "cursor.clog" in res[0]["problems"][0]
        assert cat.show(sid)["last_verify_ok"] == 0
        assert cat.participants()[0]["participant_id"] == "sim-0001"
    v2 = _cli("sessions", "--db", str(db2), "verify")
    assert v2.returncode == 1 and "FAILED" in v2.stdout


def test_catalogue_bad_input(tmp_path):
    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValidationError, match="not a cortexlink catalogue"):
        Catalogue(bad)
    with Catalogue(tmp_path / "ok.sqlite") as cat:
        with pytest.raises(ValidationError, match="no session 'nope'"):
            cat.show("nope")
        with pytest.raises(ValidationError, match="manifest unreadable"):
            cat.register(tmp_path)
    # the schema holds only pseudonymous codes: no column for names or birth dates
    cols = {r[1] for r in sqlite3.connect(tmp_path / "ok.sqlite").execute("PRAGMA table_info(participants)")}
    assert cols == {"participant_id", "created_utc"}


def test_record_cli_errors(tmp_path):
    r = _cli("record", "--channels", "8", "--seconds", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "needs a source: --sim" in r.stderr
    r = _cli("record", "--sim", "--channels", "0", "--seconds", "1", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "channels" in r.stderr
    r = _cli("recover", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_replay_of_an_imported_recording_matches_offline_features(tmp_path):
    """A raw + sidecar file replays through the extractor; same features as one offline pass."""
    from cortexlink.core.types import ChannelMap
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.sim import SimulatedImplant

    imp = SimulatedImplant.from_preset("tiny", seed=5)
    data = np.asarray(imp.read(30000).data)
    (tmp_path / "rec.raw").write_bytes(data.astype("<i2").tobytes())
    (tmp_path / "rec.json").write_text(json.dumps({"dtype": "int16", "n_channels": data.shape[1],
                                                   "fs_hz": 30000.0, "gain_uv": 0.195}))
    r = replay(tmp_path / "rec.raw")
    assert r["compare"] == {} and r["seconds"] == pytest.approx(1.0)
    fx = FeatureExtractor(ChannelMap.grid(data.shape[1], gain_uv=0.195), 30000.0, bin_ms=20.0)
    ref = fx.apply(data)
    np.testing.assert_array_equal(r["features"]["data"], ref.data)
    cli = _cli("replay", str(tmp_path / "rec.raw"))
    assert cli.returncode == 0 and "nothing recorded to compare with" in cli.stdout


def test_replay_of_the_exported_nwb_equals_the_live_session(recorded, tmp_path):
    d, _db, _ = recorded
    ex = _cli("export", str(d / "s1"), "--to", str(tmp_path / "s1.nwb"))
    assert ex.returncode == 0, ex.stderr
    r = replay(tmp_path / "s1.nwb")
    c = r["compare"]["features"]
    assert c["equal"] and c["rows_compared"] == c["rows_recorded"] > 300
    cli = _cli("replay", str(tmp_path / "s1.nwb"), "--json")
    assert cli.returncode == 0 and json.loads(cli.stdout)["compare"]["features"]["equal"]


@pytest.mark.req("SR-32")
def test_each_decoder_that_went_live_is_in_the_recording_with_its_sha256(recorded):
    """The manifest's ``decoders`` and each ``decoder`` event carry the SHA-256 of the file in
    ``decoders/`` (computed here from the bytes), and that file loads as the class that went live."""
    import hashlib

    from cortexlink.decoders import load
    from cortexlink.io.session_log import verify_session

    d, _db, _ = recorded
    rdr = SessionReader(d / "s1")
    files = sorted((d / "s1" / "decoders").glob("*.npz"))
    live = [e for e in rdr.events() if e["kind"] == "decoder"]
    assert files and sorted(e["file"] for e in live) == sorted(f"decoders/{p.name}" for p in files)
    for e in live:
        p = d / "s1" / e["file"]
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        assert e["sha256"] == digest
        assert rdr.manifest["decoders"][e["file"]] == {"file": e["file"], "sha256": digest, "bytes": p.stat().st_size}
        assert type(load(p)).__name__ == e["decoder_class"]
    assert verify_session(d / "s1")["ok"]


@pytest.mark.req("SR-32")
def test_replay_refuses_a_decoder_file_whose_sha256_differs_from_the_recorded_one(recorded, tmp_path):
    """A valid decoder file swapped in after the session (same class, other parameters) is refused
    by replay, naming the file: its SHA-256 is not the one recorded when the decoder went live."""
    import shutil

    from cortexlink.decoders import load

    d, _db, _ = recorded
    s = shutil.copytree(d / "s1", tmp_path / "s1")
    p = s / "decoders" / "decoder-v1.npz"
    dec = load(p)
    dec.A_ = dec.A_ * 0.5                        # still a valid, loadable KalmanFilter
    dec.save(p)
    with pytest.raises(ValidationError, match=r"decoder-v1\.npz: the decoder file is not the one .* SHA-256"):
        replay(s, seconds=1.0)
    # the file put back as recorded replays again: the check compares, it does not refuse every file
    shutil.copy2(d / "s1" / "decoders" / "decoder-v1.npz", p)
    assert replay(s, seconds=1.0)["decoder"] is not None
