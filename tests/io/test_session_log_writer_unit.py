"""The session recorder, pinned down: every record's CRC, order and sequence numbers, the manifest
it starts with, stream declarations, the queue policies (drops counted, with their sample ranges, in
the stats, the manifest and the events), write errors that stop the recording cleanly, the lock,
the free-space checks and close.

Fast and deterministic: where a test needs the queue to fill, the writer thread is held inside a
write (by an event, with a bounded wait), never raced against. These are the tests mutation
testing runs against :mod:`cortexlink.io.session_log.writer`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, CortexlinkError, ValidationError
from cortexlink.core.types import BinnedFeatures, ChannelMap, Chunk
from cortexlink.io.catalogue import Catalogue
from cortexlink.io.session_log import (
    InsufficientDiskSpace, RecorderOverflow, SessionBusy, SessionLock, SessionReader, SessionRecorder,
    estimate_bytes, read_file_header, verify_session,
)
from cortexlink.io.session_log import writer as writer_mod

FS = 1000.0
_REC = struct.Struct("<4sIqqqI")          # magic, payload length, seq, sample, host ns, CRC-32
WAIT_S = 30.0                             # bound on every wait for the writer thread


def _rec(path: Path, **kw) -> SessionRecorder:
    kw.setdefault("catalogue", False)
    return SessionRecorder(path, **kw)


def _parse(path: Path) -> tuple[dict, list[tuple[int, int, int, bytes]]]:
    """Read a stream file with a parser of its own (not the package's): header JSON and every
    record's (seq, sample, host ns, payload), checking every CRC on the way."""
    b = path.read_bytes()
    magic, version, n = struct.unpack_from("<4sHI", b, 0)
    assert magic == b"CLOG" and version == 2
    end = 10 + n
    (crc,) = struct.unpack_from("<I", b, end)
    assert crc == zlib.crc32(b[:end]), "file header CRC"
    info = json.loads(b[10:end])
    pos, out = end + 4, []
    while pos < len(b):
        magic, n, seq, sample, host, crc = _REC.unpack_from(b, pos)
        payload = b[pos + _REC.size:pos + _REC.size + n]
        assert magic == b"REC0" and len(payload) == n
        assert crc == zlib.crc32(payload, zlib.crc32(b[pos:pos + 32])), f"record CRC at {pos}"
        out.append((seq, sample, host, payload))
        pos += _REC.size + n
    assert pos == len(b)
    return info, out


class _Held:
    """Holds the writer thread inside its next write until :meth:`release` (bounded waits)."""

    def __init__(self, rec: SessionRecorder) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self._write = rec._write_batch
        rec._write_batch = self._held

    def _held(self, batch, dirty):
        self.entered.set()
        self.gate.wait(WAIT_S)
        self._write(batch, dirty)

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT_S), "the writer thread never started writing"

    def release(self) -> None:
        self.gate.set()


def _wait(cond) -> None:
    ev = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if cond():
            return
        ev.wait(0.01)
    raise AssertionError("condition not reached")


# ---------------------------------------------------------------------------- records and headers
@pytest.mark.req("SR-41")
def test_every_record_is_crc_checked_and_keeps_its_seq_sample_and_time(tmp_path):
    rec = _rec(tmp_path / "s", fs_hz=FS)
    rows = [np.arange(2 * (i + 1), dtype=np.float32).reshape(i + 1, 2) + i for i in range(5)]
    for i, r in enumerate(rows):
        assert rec.write_array("x", 10 * i, r, columns=["a", "b"], host_time_ns=1000 + i) is True
    m = rec.close()
    info, recs = _parse(tmp_path / "s" / "streams" / "x.clog")
    assert info["name"] == "x" and info["kind"] == "array" and info["columns"] == ["a", "b"]
    assert info["dtype"] == "<f4" and info["rate_hz"] == FS and info["participant_id"] == "sim-0001"
    assert [r[:3] for r in recs] == [(i, 10 * i, 1000 + i) for i in range(5)]
    for r, (_s, _t, _h, payload) in zip(rows, recs):
        np.testing.assert_array_equal(np.frombuffer(payload, np.float32).reshape(-1, 2), r)
    st = m["streams"]["x"]
    assert (st["records"], st["rows"], st["first_sample"], st["last_sample"]) == (5, 15, 0, 40)
    stats = rec.stats()["streams"]["x"]
    assert stats == {"records": 5, "rows": 15, "bytes": 15 * 8 + 5 * _REC.size, "dropped": 0, "dropped_rows": 0}
    # a flipped bit anywhere in a record is found by its CRC
    p = tmp_path / "s" / "streams" / "x.clog"
    good = p.read_bytes()
    for k in (len(good) - 1, len(good) - 20 - _REC.size):
        bad = bytearray(good)
        bad[k] ^= 0x01
        p.write_bytes(bytes(bad))
        assert not verify_session(tmp_path / "s")["ok"]
    p.write_bytes(good)
    assert verify_session(tmp_path / "s")["ok"]


def test_a_big_batch_is_written_in_order_with_consecutive_seqs(tmp_path):
    rec = _rec(tmp_path / "s")
    held = _Held(rec)
    rec.write_row("c", 0, [0.0])
    held.wait_entered()
    for i in range(1, 150):                              # one batch of 149 (three writes of at most 64)
        rec.write_row("c", i, [float(i)])
    held.release()
    rec.close()
    _info, recs = _parse(tmp_path / "s" / "streams" / "c.clog")
    assert [r[0] for r in recs] == list(range(150)) and [r[1] for r in recs] == list(range(150))
    assert [np.frombuffer(r[3], np.float64)[0] for r in recs] == [float(i) for i in range(150)]


def test_the_manifest_is_written_when_recording_starts(tmp_path):
    cm = ChannelMap.grid(4)
    rec = _rec(tmp_path / "s", channel_map=cm, fs_hz=FS, config={"k": 1}, seeds={"seed": 5}, participant_id="P-9",
               expected_seconds=2.0, max_queue_bytes=4096, on_full="block", fsync_interval_s=0.5)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format"] == "cortexlink-session" and m["format_version"] == 2 and m["state"] == "recording"
    assert m["participant_id"] == "P-9" and m["session_id"] == rec.session_id
    assert rec.session_id.startswith("P-9-") and rec.session_id.endswith(f"-{os.getpid()}")
    assert m["fs_hz"] == FS and m["channel_map"] == cm.to_dict() and m["expected_seconds"] == 2.0
    assert m["config"] == {"k": 1} and m["seeds"] == {"seed": 5}
    assert m["provenance"]["pid"] == os.getpid() and m["provenance"]["cortexlink_version"]
    assert m["writer"] == {"max_queue_bytes": 4096, "on_full": "block", "fsync_interval_s": 0.5, "raw_codec": "none"}
    assert m["streams"]["events"]["kind"] == "json" and "files" not in m
    assert (tmp_path / "s" / "streams").is_dir()
    rec.close()
    rec2 = _rec(tmp_path / "t", session_id="given")
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert m["session_id"] == "given" and m["config"] == {} and m["seeds"] == {} and m["channel_map"] is None
    assert m["fs_hz"] is None
    rec2.close()


@pytest.mark.parametrize("kw, exc, match", [
    ({"on_full": "wait"}, ConfigError, "on_full"),
    ({"max_queue_bytes": 0}, ConfigError, "max_queue_bytes"),
    ({"max_queue_bytes": 1.5}, ConfigError, "max_queue_bytes"),
    ({"block_timeout_s": -1.0}, ConfigError, "block_timeout_s"),
    ({"fsync_interval_s": 0.0}, ConfigError, "fsync_interval_s"),
    ({"fs_hz": 0.0}, ConfigError, "fs_hz"),
    ({"participant_id": "Jane Doe"}, ValidationError, "participant_id"),
    ({"raw_codec": "zip"}, ConfigError, "raw_codec"),
])
def test_bad_settings_are_refused_by_name_before_anything_is_written(tmp_path, kw, exc, match):
    with pytest.raises(exc, match=match):
        _rec(tmp_path / "s", **kw)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_block_timeout_zero_is_allowed(tmp_path):
    rec = _rec(tmp_path / "s", on_full="block", block_timeout_s=0)
    assert rec.block_timeout_s == 0.0
    rec.close()


# ---------------------------------------------------------------------------- streams
def test_declare_checks_names_kinds_and_columns_and_keeps_a_copy_of_the_header(tmp_path):
    rec = _rec(tmp_path / "s", fs_hz=FS)
    for name in ("", "a/b", "a b", "ü"):
        with pytest.raises(ValidationError, match="stream name must be letters"):
            rec.declare(name, columns=["a"])
    with pytest.raises(ValidationError, match="'events' is already declared"):
        rec.declare("events", kind="json")
    with pytest.raises(ValidationError, match="kind must be 'array' or 'json'; got 'table'"):
        rec.declare("t", kind="table")
    with pytest.raises(ValidationError, match="array stream 'v' needs its column names"):
        rec.declare("v")
    rec.declare("v.1_a-b", dtype="int32", columns=("p", 3), rate_hz=50.0, units="mm")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())       # written at once
    st = m["streams"]["v.1_a-b"]
    assert st["kind"] == "array" and st["dtype"] == "<i4" and st["rate_hz"] == 50.0 and st["units"] == "mm"
    assert st["n_columns"] == 2 and "columns" not in st and st["header"]["columns"] == ["p", "3"]
    assert st["header"]["session_id"] == rec.session_id
    rec.write_array("v.1_a-b", 0, np.array([[1, 2]], np.int32))
    rec.close()
    info, _off = read_file_header(tmp_path / "s" / "streams" / "v.1_a-b.clog")
    assert info == st["header"]


def test_set_source_names_the_source_at_once_and_refuses_a_different_one(tmp_path):
    rec = _rec(tmp_path / "s")
    cm = ChannelMap.grid(4)
    rec.set_source(cm, FS, dsp={"bin_ms": 20})
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["fs_hz"] == FS and m["channel_map"] == cm.to_dict() and m["dsp"] == {"bin_ms": 20}
    rec.set_source(cm, FS + 1e-10)                       # the same rate, to the clock's resolution
    with pytest.raises(ValidationError, match="channel map differs"):
        rec.set_source(ChannelMap.grid(5), FS)
    with pytest.raises(ValidationError, match="fs_hz=1001 differs from the recording's 1000"):
        rec.set_source(cm, FS + 1.0)
    rec.set_source(None, FS)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["channel_map"] is None
    rec.close()
    rec = _rec(tmp_path / "t", fs_hz=1e-9)
    rec.set_source(None, 2e-9)                           # 1e-9 Hz apart: the tolerance itself
    assert rec.fs_hz == 2e-9
    rec.close()


def test_write_array_shapes_dtypes_columns_and_copies(tmp_path):
    rec = _rec(tmp_path / "s")
    held = _Held(rec)
    rec.write_row("first", 0, [0.0])
    held.wait_entered()
    a = np.array([1.5, 2.5, 3.5])
    assert rec.write_array("one", 7, a)                        # 1-D: one row, columns c0..c2, its dtype
    a[:] = -1                                                  # changed after the call: not recorded
    with pytest.raises(ValidationError, match=r"must be 1-D or 2-D; got shape \(1, 1, 3\)"):
        rec.write_array("one", 8, np.zeros((1, 1, 3)))
    with pytest.raises(ValidationError, match="stream 'one' has 3 columns; got rows of 2"):
        rec.write_array("one", 8, np.zeros((1, 2)))
    wide = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert rec.write_array("one", 9, wide[:, :3])              # not contiguous, other dtype: converted
    assert rec.write_array("one", 12, np.array([[7, 8, 9]]))    # contiguous, other dtype: converted
    same = np.arange(8.0).reshape(2, 4)
    assert rec.write_array("one", 13, same[:, 1:])              # the stream's dtype, not contiguous
    f64 = np.ones((2, 2))
    rec.write_array("f", 0, f64, dtype="float32", columns=["u", "v"], rate_hz=20.0)   # the dtype asked for
    f64[:] = 7
    held.release()
    rec.close()
    r = SessionReader(tmp_path / "s")
    assert r.columns("one") == ["c0", "c1", "c2"] and r.stream_info("one")["dtype"] == "<f8"
    s, d = r.read_array("one")
    np.testing.assert_array_equal(s, [7, 9, 10, 11, 12, 13, 14])
    np.testing.assert_array_equal(d, [[1.5, 2.5, 3.5], [0, 1, 2], [4, 5, 6], [8, 9, 10], [7, 8, 9],
                                      [1, 2, 3], [5, 6, 7]])
    assert [rc.host_time_ns for rc in r.records("one")] == [0, 0, 0, 0]
    assert r.stream_info("f")["rate_hz"] == 20.0 and r.stream_info("f")["dtype"] == "<f4"
    np.testing.assert_array_equal(r.read_array("f")[1], np.ones((2, 2)))


def test_write_row_takes_a_dict_or_values_with_columns(tmp_path):
    rec = _rec(tmp_path / "s")
    assert rec.write_row("cur", 5, {"x": 1.0, "y": 2.0}, host_time_ns=77)
    assert rec.write_row("cur", 6, {"y": 4.0, "x": 3.0})       # the stream's column order
    assert rec.write_row("dec", 1, [0.5, 1], columns=["p", "q"])
    assert rec.write_row("ord", 1, {"x": 1.0, "y": 2.0}, columns=["y", "x"])
    rec.close()
    r = SessionReader(tmp_path / "s")
    assert r.columns("cur") == ["x", "y"] and r.stream_info("cur")["dtype"] == "<f8"
    np.testing.assert_array_equal(r.read_array("cur")[1], [[1.0, 2.0], [3.0, 4.0]])
    assert [rc.host_time_ns for rc in r.records("cur")] == [77, 0]
    assert r.columns("dec") == ["p", "q"] and r.read_array("dec")[1].tolist() == [[0.5, 1.0]]
    assert r.columns("ord") == ["y", "x"] and r.read_array("ord")[1].tolist() == [[2.0, 1.0]]


def test_write_raw_declares_the_raw_stream_from_the_source(tmp_path):
    cm = ChannelMap(["A1", "B7", "C3"])
    rec = _rec(tmp_path / "s", channel_map=cm, fs_hz=FS)
    data = np.arange(12, dtype=np.int16).reshape(4, 3)
    assert rec.write_raw(Chunk(data, FS, 100, 55, 0))
    assert rec.write_raw(Chunk(data[:1], FS, 104, 56, 1))
    rec.close()
    r = SessionReader(tmp_path / "s")
    info = r.stream_info("raw")
    assert info["columns"] == ["A1", "B7", "C3"] and info["units"] == "counts" and info["rate_hz"] == FS
    assert info["channel_map"] == cm.to_dict() and "codec" not in info and info["dtype"] == "<i2"
    s, d = r.read_array("raw")
    np.testing.assert_array_equal(s, [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(d, np.concatenate([data, data[:1]]))
    assert [rc.host_time_ns for rc in r.records("raw")] == [55, 56]
    rec = _rec(tmp_path / "t")                                     # no channel map: numbered columns, µV
    rec.write_raw(Chunk(np.zeros((2, 2), np.float32), 500.0, 0, 0, 0))
    rec.close()
    info = SessionReader(tmp_path / "t").stream_info("raw")
    assert info["columns"] == ["ch0000", "ch0001"] and info["units"] == "uV" and info["channel_map"] is None
    assert info["rate_hz"] == 500.0 and info["dtype"] == "<f4"


def test_write_features_records_bins_and_gaps(tmp_path):
    rec = _rec(tmp_path / "s", fs_hz=FS)
    empty = BinnedFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), 20, FS, ("a", "b"))
    assert rec.write_features(empty) is True
    bf = BinnedFeatures(np.ones((3, 2), np.float32), np.array([40, 60, 80]), 20, 2 * FS, ("a", "b"),
                        gaps=((30, 10),))
    assert rec.write_features(bf, name="feat")
    rec.close()
    r = SessionReader(tmp_path / "s")
    assert "features" not in r.streams
    info = r.stream_info("feat")
    assert info["columns"] == ["a", "b"] and info["bin_width_samples"] == 20 and info["rate_hz"] == 2 * FS
    assert info["dtype"] == "<f4"
    assert r.read_array("feat")[0].tolist() == [40, 60, 80]
    gaps = r.events("gap")
    assert len(gaps) == 1 and gaps[0]["sample"] == 30 and gaps[0]["n_missing"] == 10 and gaps[0]["stream"] == "feat"
    rec = _rec(tmp_path / "t")
    rec.write_features(bf)
    rec.close()
    assert "features" in SessionReader(tmp_path / "t").streams


# ---------------------------------------------------------------------------- events and decoders
def test_events_carry_their_fields_and_are_never_dropped_for_room(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=8)
    held = _Held(rec)
    rec.event("first")
    held.wait_entered()
    assert rec.write_row("x", 0, [1.0]) is True                 # 8 bytes: the budget
    assert rec.write_row("x", 1, [2.0]) is False                # no room
    for i in range(5):
        assert rec.event("mark", sample=i, note="n" * 100) is True
    held.release()
    rec.close()
    rec2 = _rec(tmp_path / "t")
    assert rec2.event("typed", sample=np.int64(3), gain=np.float32(0.5), n=np.int16(2), where=tmp_path)
    rec2.close()
    typed = SessionReader(tmp_path / "t").events("typed")[0]
    assert (typed["sample"], typed["gain"], typed["n"], typed["where"]) == (3, 0.5, 2, str(tmp_path))
    ev = SessionReader(tmp_path / "s").events()
    marks = [e for e in ev if e["kind"] == "mark"]
    assert [e["sample"] for e in marks] == list(range(5)) and all(e["note"] == "n" * 100 for e in marks)
    assert ev[0]["kind"] == "first" and ev[0]["sample"] == -1 and isinstance(ev[0]["wall_utc"], float)
    assert [rc.sample for rc in SessionReader(tmp_path / "s").records("events")][1:6] == list(range(5))


def test_a_decoder_going_live_is_saved_with_its_checksum(tmp_path):
    class Dec:
        def save(self, path):
            Path(path).write_bytes(b"weights")
            return Path(path)

    rec = _rec(tmp_path / "s", config={"gain": np.float32(2.0)})
    p = rec.save_decoder(Dec(), "kf", sample=300)
    assert p == tmp_path / "s" / "decoders" / "kf.npz"
    import hashlib
    sha = hashlib.sha256(b"weights").hexdigest()
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())      # at once, before close
    assert m["decoders"] == {"decoders/kf.npz": {"file": "decoders/kf.npz", "sha256": sha, "bytes": 7}}
    assert m["config"] == {"gain": 2.0}
    rec.save_decoder(Dec(), "kf2", sample=400)                           # a second one, same folder
    (tmp_path / "outside.npz").write_bytes(b"x")
    rec.event("decoder", file="../outside.npz")                          # not in the session: no checksum
    rec.event("decoder", file="decoders/none.npz")                       # no such file
    rec.event("decoder", file=5)
    rec.close()
    ev = SessionReader(tmp_path / "s").events("decoder")
    assert ev[0]["sha256"] == sha and ev[0]["name"] == "kf" and ev[0]["sample"] == 300
    assert ev[0]["decoder_class"] == "Dec" and ev[0]["file"] == "decoders/kf.npz"
    assert ev[1]["name"] == "kf2" and ev[1]["sha256"] == sha
    assert all("sha256" not in e for e in ev[2:]) and len(ev) == 5
    assert sorted(SessionReader(tmp_path / "s").manifest["decoders"]) == ["decoders/kf.npz", "decoders/kf2.npz"]


# ---------------------------------------------------------------------------- the queue
@pytest.mark.req("SR-44")
def test_drop_policy_counts_every_dropped_item_with_its_sample_range(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=16, on_full="drop")
    held = _Held(rec)
    rec.write_array("x", 0, np.zeros((1, 2)), columns=["a", "b"])      # taken by the writer, held there
    held.wait_entered()
    assert rec.write_array("x", 1, np.zeros((1, 2))) is True            # 16 bytes queued: the budget
    results = [rec.write_array("x", s, np.zeros((n, 2))) for s, n in ((2, 1), (3, 2), (5, 1), (9, 3))]
    assert results == [False] * 4
    st = rec.stats()
    assert st["queue_bytes"] == 16 and st["max_queue_bytes_seen"] == 16 and st["dropped_total"] == 4
    assert st["streams"]["x"]["dropped"] == 4 and st["streams"]["x"]["dropped_rows"] == 7
    held.release()
    m = rec.close()
    assert m["state"] == "closed" and m["max_queue_bytes_seen"] == 16
    assert m["dropped"] == {"x": {"items": 4, "rows": 7, "ranges": [[2, 6], [9, 12]]}}
    ev = SessionReader(tmp_path / "s").events("dropped")
    assert ev == [dict(ev[0], kind="dropped", stream="x", items=4, rows=7, ranges=[[2, 6], [9, 12]])]
    assert SessionReader(tmp_path / "s").read_array("x")[0].tolist() == [0, 1]
    assert m["streams"]["x"]["records"] == 2


@pytest.mark.req("SR-44")
def test_a_dropped_empty_item_still_covers_its_sample(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=8)
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    rec.write_row("x", 1, [0.0])
    assert rec.write_array("x", 4, np.zeros((0, 1))) is True            # 0 bytes always fit
    for s in (5, 6, 8):
        rec.write_row("x", s, [0.0])
    held.release()
    m = rec.close()
    assert m["dropped"]["x"]["ranges"] == [[5, 7], [8, 9]] and m["dropped"]["x"]["rows"] == 3


@pytest.mark.req("SR-44")
def test_drops_are_logged_at_the_first_and_every_thousandth(tmp_path, caplog):
    rec = _rec(tmp_path / "s", max_queue_bytes=8)
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    rec.write_row("x", 1, [0.0])
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.session_log"):
        for s in range(2, 2 + 2001):
            rec.write_row("x", 2 * s, [0.0])                             # never adjacent: one range each
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 3 and "1 item(s) of stream 'x' dropped (queue full)" in warnings[0]
    assert warnings[0].startswith(f"recorder {tmp_path / 's'}: ")
    assert "1000 item(s)" in warnings[1] and "2000 item(s)" in warnings[2]
    held.release()
    m = rec.close()
    assert m["dropped"]["x"]["items"] == 2001 and len(m["dropped"]["x"]["ranges"]) == 1000


@pytest.mark.req("SR-44")
def test_the_dropped_ranges_kept_in_memory_are_bounded(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=8)
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    rec.write_row("x", 1, [0.0])
    logging.getLogger("cortexlink.io.session_log").disabled = True
    try:
        for s in range(2, 2 + 10_002):
            rec.write_row("x", 2 * s, [0.0])
    finally:
        logging.getLogger("cortexlink.io.session_log").disabled = False
    assert len(rec._streams["x"].dropped_ranges) == 10_000
    assert rec.stats()["streams"]["x"]["dropped"] == 10_002                # every drop still counted
    held.release()
    m = rec.close()
    assert m["dropped"]["x"]["items"] == 10_002 and len(m["dropped"]["x"]["ranges"]) == 1000
    ev = SessionReader(tmp_path / "s").events("dropped")[0]
    assert ev["items"] == 10_002 and len(ev["ranges"]) == 1000


@pytest.mark.req("SR-44")
def test_fail_policy_raises_naming_the_stream_and_counts_the_drop(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=8, on_full="fail")
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    assert rec.write_row("x", 1, [0.0]) is True                         # exactly at the budget
    with pytest.raises(RecorderOverflow, match=r"8 bytes queued, budget 8\); stream 'x' at sample 2 dropped"):
        rec.write_row("x", 2, [0.0])
    assert rec.stats()["streams"]["x"]["dropped"] == 1
    held.release()
    m = rec.close()
    assert m["dropped"]["x"]["ranges"] == [[2, 3]]


@pytest.mark.req("SR-44")
def test_block_policy_waits_for_room_then_drops(tmp_path):
    rec = _rec(tmp_path / "s", max_queue_bytes=8, on_full="block", block_timeout_s=0.01)
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    rec.write_row("x", 1, [0.0])
    assert rec.write_row("x", 2, [0.0]) is False                        # no room came within 10 ms
    assert rec.stats()["streams"]["x"]["dropped"] == 1
    rec.block_timeout_s = WAIT_S
    threading.Timer(0.05, held.release).start()                         # room comes while it waits
    assert rec.write_row("x", 3, [0.0]) is True
    m = rec.close()
    assert m["dropped"]["x"]["ranges"] == [[2, 3]] and m["streams"]["x"]["records"] == 3


def test_a_closed_recorder_refuses_writes(tmp_path):
    rec = _rec(tmp_path / "s")
    m = rec.close()
    assert rec.close() is m                                              # idempotent
    with pytest.raises(ValidationError, match="is closed; start a new SessionRecorder"):
        rec.write_row("x", 0, [0.0])
    with pytest.raises(ValidationError, match="is closed"):
        rec.event("late")


# ---------------------------------------------------------------------------- the lock and close
@pytest.mark.req("SR-43")
def test_one_writer_per_folder_and_the_lock_is_released_at_close(tmp_path):
    rec = _rec(tmp_path / "s")
    with pytest.raises(SessionBusy, match="being recorded"):
        SessionLock(tmp_path / "s", "recording").acquire()
    with pytest.raises(ValidationError, match="already holds a session"):
        _rec(tmp_path / "s")
    with rec:
        pass
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["state"] == "closed"
    with SessionLock(tmp_path / "s", "recover"):
        pass
    assert not (tmp_path / "s" / ".lock").exists()


@pytest.mark.req("SR-43")
def test_a_failed_start_releases_the_lock(tmp_path, monkeypatch):
    def no_room(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(writer_mod, "_atomic_write_json", no_room)
    with pytest.raises(OSError, match="No space"):
        _rec(tmp_path / "s")
    with SessionLock(tmp_path / "s", "recover"):                          # not left held
        pass


def test_close_waits_for_the_writer_and_says_when_it_does_not_finish(tmp_path):
    rec = _rec(tmp_path / "s")
    held = _Held(rec)
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    with pytest.raises(CortexlinkError, match=r"writer did not finish within 0.05 s"):
        rec.close(timeout_s=0.05)
    held.release()
    m = rec.close()
    assert m["state"] == "closed" and m["streams"]["x"]["records"] == 1


@pytest.mark.req("SR-41")
def test_close_writes_checksums_and_registers_the_session(tmp_path):
    cat = tmp_path / "cat.sqlite"
    rec = _rec(tmp_path / "s", catalogue=cat)
    rec.write_row("x", 0, [1.0])
    m = rec.close()
    import hashlib
    rec_files = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*.clog"))
    assert rec_files == ["streams/x.clog"]
    for rel in rec_files:
        data = (tmp_path / "s" / rel).read_bytes()
        assert m["files"][rel] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert m.get("stopped_reason") is None and m["dropped"] == {} and m["state"] == "closed"
    with Catalogue(cat) as c:
        assert [s["session_id"] for s in c.sessions()] == [rec.session_id]


@pytest.mark.req("SR-44")
def test_when_the_final_manifest_cannot_be_written_the_streams_stay_and_the_lock_goes(tmp_path, monkeypatch):
    rec = _rec(tmp_path / "s")
    rec.write_row("x", 0, [1.0])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(writer_mod, "finalize", full)
    m = rec.close()
    assert m["state"] == "stopped" and "No space" in m["finalize_error"] and rec.manifest is m
    assert m["stopped_reason"] is None and m["session_id"] == rec.session_id
    with SessionLock(tmp_path / "s", "recover"):
        pass
    assert SessionReader(tmp_path / "s").read_array("x")[1].tolist() == [[1.0]]


# ---------------------------------------------------------------------------- write errors
@pytest.mark.req("SR-44")
@pytest.mark.parametrize("err, reason", [
    (errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk full"), (errno.EIO, "write error: [Errno 5] boom"),
])
def test_a_write_error_stops_the_recording_cleanly_and_counts_what_is_lost(tmp_path, caplog, err, reason):
    rec = _rec(tmp_path / "s")
    rec.write_row("y", 0, [1.0])                                    # intact before the error
    rec.event("before")
    _wait(lambda: rec.stats()["streams"]["y"]["records"] == 1 and rec.stats()["streams"]["events"]["records"] == 1)
    real = rec._write_all

    def write_all(st, parts):
        if st.name == "x":
            raise OSError(err, "boom")
        return real(st, parts)
    rec._write_all = write_all
    held = _Held(rec)
    rec.write_array("x", 10, np.zeros((2, 1)))
    held.wait_entered()
    rec.write_array("x", 12, np.zeros((3, 1)))                      # queued behind the failing write
    rec.write_row("y", 1, [2.0])
    with caplog.at_level(logging.ERROR, logger="cortexlink.io.session_log"):
        held.release()
        _wait(lambda: rec.stopped_reason is not None)
    assert rec.stopped_reason == reason and rec.stats()["stopped_reason"] == reason
    assert rec.manifest["stopped_reason"] == reason
    msg = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR][0]
    assert msg.startswith(f"recorder {tmp_path / 's'}: {reason} while writing stream 'x'; recording stopped")
    _wait(lambda: rec.stats()["dropped_total"] == 3)                # the queued items, dropped as well
    assert rec.write_row("y", 2, [3.0]) is False                    # everything after it too
    assert rec.event("after") is False
    m = rec.close()
    assert m["state"] == "stopped" and m["stopped_reason"] == reason
    assert m["dropped"]["x"] == {"items": 2, "rows": 5, "ranges": [[10, 15]]}
    assert m["dropped"]["y"]["items"] == 2
    # the late event, then the three notes of drops close tries to add: lost too, counted (one row each)
    assert m["dropped"]["events"] == {"items": 4, "rows": 4, "ranges": [[-1, 0]] * 4}
    r = SessionReader(tmp_path / "s")
    assert r.read_array("y")[1].tolist() == [[1.0]] and [e["kind"] for e in r.events()] == ["before"]
    assert m["streams"]["x"].get("records", 0) == 0


@pytest.mark.req("SR-44")
def test_a_crashing_writer_reports_and_counts_the_queue_as_dropped(tmp_path):
    rec = _rec(tmp_path / "s")
    gate, entered = threading.Event(), threading.Event()

    def broken(batch, dirty):
        entered.set()
        gate.wait(WAIT_S)
        raise RuntimeError("encoder bug")
    rec._write_batch = broken
    rec.write_row("x", 0, [0.0])
    assert entered.wait(WAIT_S)
    rec.write_row("x", 1, [0.0])
    rec.write_row("x", 2, [0.0])
    gate.set()
    _wait(lambda: rec.stopped_reason is not None)
    assert rec.stopped_reason == "writer error: RuntimeError('encoder bug')"
    assert rec.manifest["stopped_reason"] == rec.stopped_reason
    st = rec.stats()
    assert st["queue_bytes"] == 0 and st["streams"]["x"]["dropped"] == 2
    m = rec.close()
    assert m["state"] == "stopped" and m["stopped_reason"] == "writer error: RuntimeError('encoder bug')"
    assert m["dropped"]["x"]["ranges"] == [[1, 3]]


@pytest.mark.req("SR-40")
def test_short_writes_are_finished_and_a_failed_write_leaves_no_torn_record(tmp_path, monkeypatch):
    rec = _rec(tmp_path / "s")
    rec.write_row("x", 0, [1.0])
    _wait(lambda: rec.stats()["streams"]["x"]["records"] == 1)
    real_writev = os.writev
    mode = {"short": True}

    def writev(fd, parts):
        if mode["short"]:
            return real_writev(fd, parts[:1])                        # the kernel took only the first part
        os.write(fd, bytes(parts[0])[:10])                           # a partial write, then an error
        raise OSError(errno.EIO, "bad sector")
    monkeypatch.setattr(writer_mod.os, "writev", writev)
    rec.write_row("x", 1, [2.0])
    _wait(lambda: rec.stats()["streams"]["x"]["records"] == 2)
    mode["short"] = False
    rec.write_row("x", 2, [3.0])
    _wait(lambda: rec.stopped_reason is not None)
    monkeypatch.undo()
    m = rec.close()
    assert m["stopped_reason"] == "write error: [Errno 5] bad sector"
    _info, recs = _parse(tmp_path / "s" / "streams" / "x.clog")       # no torn bytes after the last record
    assert [np.frombuffer(r[3], np.float64)[0] for r in recs] == [1.0, 2.0]
    assert verify_session(tmp_path / "s")["ok"]


def test_a_write_of_many_parts_is_written_whole(tmp_path):
    rec = _rec(tmp_path / "s")
    rec.declare("x", columns=["a"])
    st = rec._streams["x"]
    rec._open(st)
    start = st.good_offset
    parts = [bytes([i % 251]) * 3 for i in range(1500)]
    rec._write_all(st, parts)
    assert st.good_offset == start + 4500
    st.file.close()
    st.file = None
    assert (tmp_path / "s" / "streams" / "x.clog").read_bytes()[start:] == b"".join(parts)
    rec.close()


def test_a_reopened_stream_file_keeps_its_header(tmp_path):
    rec = _rec(tmp_path / "s")
    rec.declare("x", columns=["a"])
    st = rec._streams["x"]
    rec._open(st)
    first = st.good_offset
    st.file.close()
    rec._open(st)                                                    # appends; the header is not written twice
    assert st.good_offset == first == (tmp_path / "s" / "streams" / "x.clog").stat().st_size
    st.file.close()
    st.file = None
    rec.close()


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def test_fsync_is_at_close_when_the_interval_is_long_and_its_failure_is_only_logged(tmp_path, monkeypatch, caplog):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the file an fsync is for")
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(_fd_path(fd))
        return real(fd)
    monkeypatch.setattr(writer_mod.os, "fsync", fsync)
    rec = _rec(tmp_path / "s", fsync_interval_s=1e6)
    rec.write_row("x", 0, [1.0])
    _wait(lambda: rec.stats()["streams"]["x"]["records"] == 1)
    clog = str((tmp_path / "s" / "streams" / "x.clog").resolve())
    assert clog not in synced                                       # not before the interval
    rec.close()
    assert synced.count(clog) == 2                                  # at close: the writer's, then close's own

    def failing(fd):
        if _fd_path(fd).endswith(".clog"):
            raise OSError(errno.EIO, "fsync failed")
        return real(fd)
    monkeypatch.setattr(writer_mod.os, "fsync", failing)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.session_log"):
        rec = _rec(tmp_path / "t", fsync_interval_s=1e6)
        rec.write_row("x", 0, [1.0])
        m = rec.close()
    assert m["state"] == "closed" and m["streams"]["x"]["records"] == 1
    msgs = [r.getMessage() for r in caplog.records if "fsync of" in r.getMessage()]
    assert msgs and str(tmp_path / "t" / "streams" / "x.clog") + " failed: [Errno 5] fsync failed" in msgs[0]
    assert msgs[0].startswith(f"recorder {tmp_path / 't'}: ")


def test_data_left_idle_is_synced_within_the_interval(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the file an fsync is for")
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(_fd_path(fd))
        return real(fd)
    monkeypatch.setattr(writer_mod.os, "fsync", fsync)
    rec = _rec(tmp_path / "s", fsync_interval_s=0.2)
    rec.write_row("x", 0, [1.0])
    clog = str((tmp_path / "s" / "streams" / "x.clog").resolve())
    _wait(lambda: clog in synced)                                   # no more data, no close: synced all the same
    rec.close()


# ---------------------------------------------------------------------------- disk space
def test_free_space_is_checked_against_the_expected_size(tmp_path, monkeypatch):
    free = {"bytes": 10_000}

    class Usage:
        def __init__(self, f):
            self.free, self.total, self.used = f, 0, 0
    monkeypatch.setattr(writer_mod.shutil, "disk_usage", lambda p: Usage(free["bytes"]))
    rec = _rec(tmp_path / "a", expected_bytes=10_000)                  # exactly what is free: fine
    rec.close()
    with pytest.raises(InsufficientDiskSpace, match=r"recording this session needs about 0\.00 GB; .* has 0\.00 GB free"):
        _rec(tmp_path / "b", expected_bytes=10_001)
    assert not (tmp_path / "b" / "manifest.json").exists()
    cm = ChannelMap.grid(2)
    need = int(estimate_bytes(2, FS, 1.0) * 3.0)
    free["bytes"] = need
    _rec(tmp_path / "c", channel_map=cm, fs_hz=FS, expected_seconds=3.0).close()
    free["bytes"] = need - 1
    with pytest.raises(InsufficientDiskSpace, match="recording 3 s of 2 channels at 1000 Hz needs about"):
        _rec(tmp_path / "d", channel_map=cm, fs_hz=FS, expected_seconds=3.0)
    free["bytes"] = estimate_bytes(0, 1.0, 50.0, raw=False)             # no source yet: the small streams
    _rec(tmp_path / "e", expected_seconds=50.0).close()
    with pytest.raises(InsufficientDiskSpace, match="recording 51 s of 0 channels at 0 Hz"):
        _rec(tmp_path / "f", expected_seconds=51.0)
    free["bytes"] = 10
    with pytest.raises(InsufficientDiskSpace, match="this session"):
        _rec(tmp_path / "g", expected_seconds=1.0, expected_bytes=11)    # the given size wins
    _rec(tmp_path / "h", expected_seconds=1e9, expected_bytes=10).close()


def test_estimate_bytes_adds_up_raw_features_and_record_headers():
    raw = 4 * 1000.0 * 10.0 * 2                                          # channels x rate x seconds x int16
    feats = 10.0 / 0.02 * (8 * 4 + 3 * (36 + 64))                        # bins x (2 x channels float32 + 3 small records)
    heads = 10.0 * 1000.0 * 36                                           # ~one raw record per ms
    assert estimate_bytes(4, 1000.0, 10.0) == int(1.05 * (raw + feats + heads)) + (1 << 20)
    assert estimate_bytes(4, 1000.0, 10.0, raw=False) == int(1.05 * feats) + (1 << 20)
    assert estimate_bytes(4, 1000.0, 10.0, itemsize=4, bin_s=0.05, n_features=3) == \
        int(1.05 * (2 * raw + 10.0 / 0.05 * (3 * 4 + 3 * 100) + heads)) + (1 << 20)


def test_the_low_disk_threshold_defaults_to_a_minute_of_data(tmp_path):
    rec = _rec(tmp_path / "a")
    assert rec.low_disk_bytes == 256 << 20
    rec.close()
    rec = _rec(tmp_path / "b", channel_map=ChannelMap.grid(256), fs_hz=30000.0)
    assert rec.low_disk_bytes == int(60 * estimate_bytes(256, 30000.0, 1.0)) > 256 << 20
    rec.close()
    rec = _rec(tmp_path / "c", low_disk_bytes=5)
    assert rec.low_disk_bytes == 5
    rec.close()


def test_the_writer_checks_free_space_as_it_writes(tmp_path):
    rec = _rec(tmp_path / "s", low_disk_bytes=1 << 62)
    rec.write_row("x", 0, [1.0])
    _wait(lambda: rec.stats()["streams"]["events"]["records"] == 1)
    rec.close()
    ev = SessionReader(tmp_path / "s").events("low_disk")
    assert len(ev) == 1 and ev[0]["threshold_bytes"] == 1 << 62 and 0 < ev[0]["free_bytes"] < 1 << 62


def test_the_low_disk_alarm_is_raised_once_and_rearmed_when_space_returns(tmp_path, monkeypatch, caplog):
    rec = _rec(tmp_path / "s", low_disk_bytes=1000)
    free = {"bytes": 10**12}

    class Usage:
        def __init__(self, f):
            self.free = f

    def usage(p):
        if free["bytes"] is None:
            raise OSError(errno.EIO, "statfs failed")
        return Usage(free["bytes"])
    held = _Held(rec)                                   # the writer thread makes no check of its own meanwhile
    rec.write_row("x", 0, [0.0])
    held.wait_entered()
    monkeypatch.setattr(writer_mod.shutil, "disk_usage", usage)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.session_log"):
        for f in (1000, 999, 10, None, 1500, 1, 1501, 999):
            free["bytes"] = f
            rec._check_disk()
    monkeypatch.undo()
    held.release()
    rec.close()
    ev = SessionReader(tmp_path / "s").events("low_disk")
    assert [(e["free_bytes"], e["threshold_bytes"]) for e in ev] == [(999, 1000), (999, 1000)]
    assert sum("low disk space" in r.getMessage() for r in caplog.records) == 2


def test_a_compressed_raw_stream_encodes_each_record_with_the_codec_its_header_names(tmp_path, monkeypatch):
    # a stand-in codec (the real round trip is in test_session_log_writer_codec.py: it loads slowly)
    made = []

    class Fake:
        def __init__(self, info):
            made.append(info)

        def encode(self, rows):
            return b"ENC" + np.ascontiguousarray(rows).tobytes()
    monkeypatch.setattr(writer_mod, "make_encoder", Fake)
    rec = _rec(tmp_path / "s", raw_codec="range", raw_codec_resync_records=3)
    chunks = [np.full((2, 2), i, np.int16) for i in range(3)]
    for i, c in enumerate(chunks):
        rec.write_raw(Chunk(c, FS, 2 * i, 0, i))
    codec = {"name": "cortexlink", "entropy": "range", "resync_records": 3}
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["streams"]["raw"]["header"]["codec"] == codec
    rec.close()
    assert len(made) == 1 and made[0]["codec"] == codec and made[0]["columns"] == ["ch0000", "ch0001"]
    b = (tmp_path / "s" / "streams" / "raw.clog").read_bytes()
    magic, version, n = struct.unpack_from("<4sHI", b, 0)
    assert version == 3 and json.loads(b[10:10 + n])["codec"] == codec        # format 3: compressed records
    pos, payloads = 10 + n + 4, []
    while pos < len(b):
        _m, k, *_ = _REC.unpack_from(b, pos)
        payloads.append(b[pos + _REC.size:pos + _REC.size + k])
        pos += _REC.size + k
    assert payloads == [b"ENC" + c.tobytes() for c in chunks]


def test_a_compressed_raw_stream_refuses_samples_other_than_int16(tmp_path):
    # (the compressed round trip is in test_session_log_writer_codec.py: the codec loads slowly)
    rec = _rec(tmp_path / "s", raw_codec="range", raw_codec_resync_records=3)
    assert (rec.raw_codec, rec.raw_codec_resync_records) == ("range", 3)
    with pytest.raises(ValidationError, match="raw_codec='range' stores int16 samples; the raw chunks are float64"):
        rec.write_raw(Chunk(np.zeros((2, 2)), FS, 0, 0, 0))
    assert "raw" not in rec.stats()["streams"]
    m = rec.close()
    assert m["writer"]["raw_codec"] == "range"
