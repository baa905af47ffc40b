"""Session log: round trip, crash safety (SIGKILL), recovery, damage, back-pressure, disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.io.session_log import (REC_HEADER_BYTES, CorruptSessionError, InsufficientDiskSpace,
                                       RecorderOverflow, SessionReader, SessionRecorder, recover, verify)

FS = 30000.0


def _chunks(n_ch: int, n_chunks: int, n_samp: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_chunks):
        yield Chunk(rng.integers(-2000, 2000, (n_samp, n_ch)).astype(np.int16), FS, i * n_samp, 0, i)


def _record(path: Path, n_ch: int = 8, n_chunks: int = 50, **kw) -> tuple[SessionRecorder, np.ndarray]:
    cm = ChannelMap.grid(n_ch)
    rec = SessionRecorder(path, channel_map=cm, fs_hz=FS, config={"x": 1}, seeds={"seed": 3}, catalogue=False, **kw)
    parts = []
    for ch in _chunks(n_ch, n_chunks):
        rec.write_raw(ch)
        parts.append(np.asarray(ch.data))
        rec.write_row("cursor", ch.end_sample, {"x": ch.start_sample / 1e4, "y": 0.5})
    rec.event("block_start", sample=0, name="b1")
    return rec, np.concatenate(parts)


def test_round_trip_and_checksums(tmp_path):
    rec, raw = _record(tmp_path / "s")
    m = rec.close()
    assert m["state"] == "closed"
    assert m["streams"]["raw"]["rows"] == raw.shape[0]
    assert m["provenance"]["cortexlink_version"]
    assert m["seeds"] == {"seed": 3}
    r = SessionReader(tmp_path / "s")
    s, data = r.read_array("raw")
    np.testing.assert_array_equal(data, raw)
    np.testing.assert_array_equal(s, np.arange(raw.shape[0]))
    cs, cur = r.read_array("cursor")
    assert r.columns("cursor") == ["x", "y"]
    assert cur.shape == (50, 2) and cs[0] == 30
    assert [e["kind"] for e in r.events()] == ["block_start"]
    chunks = list(r.iter_chunks())
    assert len(chunks) == 50 and chunks[3].start_sample == 90 and chunks[3].fs_hz == FS
    v = verify(tmp_path / "s")
    assert v["ok"], v["problems"]
    assert v["files"] == len(list((tmp_path / "s" / "streams").glob("*.clog")))


@pytest.mark.req("SR-41")
def test_verify_detects_a_changed_byte(tmp_path):
    rec, _ = _record(tmp_path / "s")
    rec.close()
    p = tmp_path / "s" / "streams" / "cursor.clog"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0xFF
    p.write_bytes(bytes(b))
    v = verify(tmp_path / "s")
    assert not v["ok"]
    assert any("cursor.clog" in x and "SHA-256" in x for x in v["problems"])
    assert any("checksum mismatch" in x for x in v["problems"])


@pytest.mark.req("SR-40", "SR-41")
def test_torn_tail_is_named_then_recovered(tmp_path):
    rec, raw = _record(tmp_path / "s", n_chunks=20)
    rec.close()
    p = tmp_path / "s" / "streams" / "raw.clog"
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size - 100)           # the last record is torn
    # the manifest still says "closed": a reader must not trust it blindly
    with pytest.raises(CorruptSessionError, match=r"raw\.clog.*torn record"):
        SessionReader(tmp_path / "s").read_array("raw")
    rep = recover(tmp_path / "s")
    assert rep["changed"] and rep["streams"]["raw"]["records"] == 19
    s, data = SessionReader(tmp_path / "s").read_array("raw")
    np.testing.assert_array_equal(data, raw[: 19 * 30])
    assert verify(tmp_path / "s")["ok"]
    assert SessionReader(tmp_path / "s").state == "recovered"
    assert list((tmp_path / "s" / "corrupt").iterdir())


@pytest.mark.req("SR-41")
def test_damage_in_the_middle_keeps_every_intact_record(tmp_path):
    rec, raw = _record(tmp_path / "s", n_chunks=20)
    rec.close()
    p = tmp_path / "s" / "streams" / "raw.clog"
    rec_len = REC_HEADER_BYTES + 30 * 8 * 2
    hdr_len = p.stat().st_size - 20 * rec_len
    b = bytearray(p.read_bytes())
    b[hdr_len + 7 * rec_len + REC_HEADER_BYTES + 11] ^= 0x55     # payload of record 7
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptSessionError, match=r"raw\.clog: damaged at byte \d+: checksum mismatch"):
        SessionReader(tmp_path / "s").read_array("raw")
    salvaged = SessionReader(tmp_path / "s", salvage=True).read_array("raw")[1]
    assert salvaged.shape[0] == 19 * 30
    rep = recover(tmp_path / "s")
    assert rep["streams"]["raw"]["records"] == 19 and rep["streams"]["raw"]["damaged_regions"] == 1
    s, data = SessionReader(tmp_path / "s").read_array("raw")
    keep = np.r_[0:7 * 30, 8 * 30:20 * 30]
    np.testing.assert_array_equal(data, raw[keep])
    np.testing.assert_array_equal(s, keep)
    assert verify(tmp_path / "s")["ok"]


@pytest.mark.req("SR-41", "SR-52")
def test_foreign_and_missing_files_are_named(tmp_path):
    with pytest.raises(CorruptSessionError, match="no manifest.json"):
        SessionReader(tmp_path)
    d = tmp_path / "fake"
    (d / "streams").mkdir(parents=True)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptSessionError, match=r"manifest\.json: not valid JSON"):
        SessionReader(d)
    (d / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CorruptSessionError, match="not a cortexlink session manifest"):
        SessionReader(d)
    rec, _ = _record(tmp_path / "s", n_chunks=2)
    rec.close()
    (tmp_path / "s" / "streams" / "raw.clog").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(CorruptSessionError, match=r"raw\.clog: not a cortexlink stream file"):
        SessionReader(tmp_path / "s").read_array("raw")
    rep = recover(tmp_path / "s")            # the foreign file is moved aside, the rest is kept
    assert "moved_aside" in rep["streams"]["raw"]
    assert "raw" not in SessionReader(tmp_path / "s").streams
    assert SessionReader(tmp_path / "s").read_array("cursor")[1].shape == (2, 2)


@pytest.mark.req("SR-41", "SR-52")
def test_metadata_that_disagrees_with_the_data_is_refused(tmp_path):
    rec, _ = _record(tmp_path / "s", n_ch=8, n_chunks=3)
    rec.close()
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["channel_map"] = ChannelMap.grid(16).to_dict()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptSessionError, match="8 columns, but the manifest's channel map has 16"):
        list(SessionReader(tmp_path / "s").iter_chunks())
    m["channel_map"] = ChannelMap.grid(8).to_dict()
    m["fs_hz"] = 20000.0
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptSessionError, match="30000.0 Hz, but the manifest says fs_hz=20000.0"):
        list(SessionReader(tmp_path / "s").iter_chunks())
    rec2 = SessionRecorder(tmp_path / "t", channel_map=ChannelMap.grid(4), fs_hz=FS, catalogue=False)
    with pytest.raises(ValidationError, match="channel map differs"):
        rec2.set_source(ChannelMap.grid(5), FS)
    with pytest.raises(ValidationError, match="4 columns; got rows of 5"):
        rec2.write_array("x", 0, np.zeros((2, 4)), columns=list("abcd"))
        rec2.write_array("x", 2, np.zeros((2, 5)))
    rec2.close()


@pytest.mark.req("SR-44")
def test_queue_full_drops_are_counted_and_recorded(tmp_path):
    n_ch = 256
    rec = SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(n_ch), fs_hz=FS, catalogue=False,
                          max_queue_bytes=30 * n_ch * 2 + 1, on_full="drop")
    # the writer thread is held inside its first write until every item was offered, so the one-item
    # queue overflows however fast the machine is (a busy machine used to decide how many dropped)
    gate, write_batch = threading.Event(), rec._write_batch

    def held(batch, dirty):
        gate.wait(60)
        write_batch(batch, dirty)

    rec._write_batch = held
    total = 3000
    try:
        ok = sum(rec.write_raw(ch) for ch in _chunks(n_ch, total))
    finally:
        gate.set()
    st = rec.stats()["streams"]["raw"]
    m = rec.close()
    assert ok <= 2 and st["dropped"] == total - ok, "a full one-item queue must drop and count the rest"
    assert ok + st["dropped"] == total
    assert m["streams"]["raw"]["records"] == ok
    assert m["dropped"]["raw"]["items"] == st["dropped"]
    ev = SessionReader(tmp_path / "s").events("dropped")
    assert ev and ev[0]["items"] == st["dropped"]
    ranges = ev[0]["ranges"]
    assert sum(b - a for a, b in ranges) == st["dropped"] * 30
    # what was written is exactly the chunks that were not dropped
    s, _ = SessionReader(tmp_path / "s").read_array("raw")
    dropped_samples = np.concatenate([np.arange(a, b) for a, b in ranges])
    assert np.intersect1d(s, dropped_samples).size == 0
    assert s.size + dropped_samples.size == total * 30


def test_queue_full_fail_policy_raises(tmp_path):
    rec = SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(64), fs_hz=FS, catalogue=False,
                          max_queue_bytes=30 * 64 * 2 + 1, on_full="fail")
    with pytest.raises(RecorderOverflow, match="queue full"):
        for ch in _chunks(64, 5000):
            rec.write_raw(ch)
    rec.close()
    assert verify(tmp_path / "s")["ok"]


def test_free_space_is_checked_before_recording(tmp_path):
    with pytest.raises(InsufficientDiskSpace, match=r"needs about .* GB free"):
        SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(4096), fs_hz=FS, expected_seconds=1e9,
                        catalogue=False)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_low_disk_alarm_event(tmp_path):
    rec = SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(4), fs_hz=FS, catalogue=False,
                          low_disk_bytes=1 << 62)
    for ch in _chunks(4, 5):
        rec.write_raw(ch)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and not rec._low_disk_alarmed:
        time.sleep(0.05)
    rec.close()
    ev = SessionReader(tmp_path / "s").events("low_disk")
    assert len(ev) == 1 and ev[0]["free_bytes"] < ev[0]["threshold_bytes"]


@pytest.mark.req("SR-44")
def test_full_disk_stops_cleanly_with_everything_before_intact(tmp_path):
    """A real full disk: a 1 MiB tmpfs (needs root and mount); written data must stay readable."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()}); the /dev/full test covers ENOSPC")
    try:
        (mnt / "ballast").write_bytes(bytes(200_000))
        rec = SessionRecorder(mnt / "s", channel_map=ChannelMap.grid(64), fs_hz=FS, catalogue=False,
                              low_disk_bytes=0)
        for ch in _chunks(64, 400):       # 400 x 3.8 KB = 1.5 MB > 1 MiB
            rec.write_raw(ch)
            time.sleep(0.0005)
        t0 = time.monotonic()
        while rec.stopped_reason is None and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        assert rec.stopped_reason == "disk full"
        m = rec.close()                   # must not raise, even if the final manifest does not fit
        assert m["state"] == "stopped" and m["dropped"]["raw"]["items"] > 0
        s, data = SessionReader(mnt / "s").read_array("raw")   # no torn record: readable without salvage
        assert 0 < s.size < 400 * 30
        np.testing.assert_array_equal(s, np.arange(s.size))
        np.testing.assert_array_equal(data, np.concatenate([c.data for c in _chunks(64, s.size // 30)]))
        (mnt / "ballast").unlink()       # free space, then make the folder consistent
        recover(mnt / "s")
        assert verify(mnt / "s")["ok"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.req("SR-44")
def test_write_error_on_one_stream_stops_recording_cleanly(tmp_path):
    """ENOSPC from the kernel: the raw stream file is /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not present")
    rec = SessionRecorder(tmp_path / "s", channel_map=ChannelMap.grid(8), fs_hz=FS, catalogue=False)
    rec.event("before", sample=0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and rec.stats()["streams"]["events"]["records"] < 1:
        time.sleep(0.02)
    os.symlink("/dev/full", tmp_path / "s" / "streams" / "raw.clog")
    for ch in _chunks(8, 5):
        rec.write_raw(ch)
    t0 = time.monotonic()
    while rec.stopped_reason is None and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    assert rec.stopped_reason == "disk full"
    assert not rec.write_raw(next(_chunks(8, 1)))       # later items are dropped and counted
    (tmp_path / "s" / "streams" / "raw.clog").unlink()
    m = rec.close()
    assert m["state"] == "stopped" and m["stopped_reason"] == "disk full"
    assert m["dropped"]["raw"]["items"] >= 6
    assert [e["kind"] for e in SessionReader(tmp_path / "s").events()][0] == "before"


@pytest.mark.req("SR-60")
def test_participant_id_must_be_pseudonymous(tmp_path):
    with pytest.raises(ValidationError, match="pseudonymous"):
        SessionRecorder(tmp_path / "s", participant_id="Jane Doe", catalogue=False)
    rec = SessionRecorder(tmp_path / "t", participant_id="P-007", catalogue=False)
    rec.close()
    with pytest.raises(ValidationError, match="already holds a session"):
        SessionRecorder(tmp_path / "t", catalogue=False)


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *args], capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.mark.req("SR-40")
def test_sigkill_mid_session_loses_at_most_the_last_second(tmp_path):
    """Kill a real-time recording with SIGKILL; recover; compare with an uninterrupted run."""
    env = {**os.environ, "CORTEXLINK_CATALOGUE": str(tmp_path / "cat.sqlite")}
    args = ["record", "--sim", "--channels", "32", "--seconds", "20", "--seed", "4", "--status-interval", "0.1"]
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.cli.main", *args, "--realtime",
                             "--out", str(tmp_path / "killed")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    last_sample, t_line = 0, time.monotonic()
    deadline = time.monotonic() + 300     # start-up (imports, JIT) and 4 s of recording on a loaded machine
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("status "):
                last_sample = int(line.split("sample=")[1].split()[0])
                t_line = time.monotonic()
                if last_sample >= 4 * 30000:       # ~4 s in (past warm-up, into calibration)
                    break
        assert last_sample >= 4 * 30000, "the recorder did not report progress"
        time.sleep(0.35)
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
    produced_max = last_sample + int((t_kill - t_line + 0.05) * 30000) + 600
    rep = _cli("recover", str(tmp_path / "killed"), "--json", env=env)
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    assert out["verified"] and out["state"] == "recovered"
    rdr = SessionReader(tmp_path / "killed")
    s, raw = rdr.read_array("raw")
    assert s[-1] + 1 >= produced_max - 30000, f"lost {(produced_max - s[-1]) / 30000:.2f} s (> 1 s)"
    assert verify(tmp_path / "killed")["ok"]
    # everything recovered equals what an uninterrupted run of the same session records
    # (up to the first bin the real-time watchdog halted, if the machine was too busy: a halt changes
    # what the participant sees, hence its intent and the implant's samples from then on)
    full = _cli(*args, "--out", str(tmp_path / "full"), "--catalogue", "none", env=env)
    assert full.returncode == 0, full.stderr
    ref = SessionReader(tmp_path / "full")
    cs, cur = rdr.read_array("cursor")
    halted = cs[cur[:, rdr.columns("cursor").index("halted")] > 0]
    stop = int(s[-1]) + 1 if halted.size == 0 else int(halted[0]) - 600
    assert stop > 30000, "the recording was halted by the watchdog within its first second"
    rs, rraw = ref.read_array("raw", stop_sample=stop)
    np.testing.assert_array_equal(rs, s[s < stop])
    np.testing.assert_array_equal(rraw, raw[s < stop])
    fs_, f = rdr.read_array("features", stop_sample=stop)
    rfs, rf = ref.read_array("features", stop_sample=int(fs_[-1]) + 1)
    np.testing.assert_array_equal(f, rf)
    # the killed session is in the catalogue, recovered
    ls = _cli("sessions", "list", "--json", env=env)
    assert [r["state"] for r in json.loads(ls.stdout)] == ["recovered"]
