"""recover() and finalize(), pinned down: torn tails cut exactly at the last intact record (the cut
bytes kept in corrupt/), damage in the middle removed with every intact record kept in order, the
lock (recover refuses a folder being recorded and always lets go of its own), records lost from a
closed session counted, checksums recomputed only where recover repaired, a lost manifest, and
registration in the catalogue.

Fast and deterministic, in-process: a crash is a copy of a live session folder (what a killed
writer leaves: state "recording", no checksums, a lock file nobody holds). These are the tests
mutation testing runs against :mod:`cortexlink.io.session_log.repair`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from cortexlink.io.catalogue import Catalogue
from cortexlink.io.session_log import (
    CorruptSessionError, SessionBusy, SessionLock, SessionReader, SessionRecorder, finalize, recover, scan_stream,
    verify_session,
)
from cortexlink.io.session_log import repair as repair_mod

REC = 36 + 16                     # one record of stream "x": header + one row of two float64
N = 10
WAIT_S = 30.0


def _write(rec: SessionRecorder) -> None:
    for i in range(N):
        rec.write_array("x", 10 * i, np.array([[i, -i]], np.float64), columns=["a", "b"])
        rec.write_array("w", 10 * i, np.full((3, 1), i, np.int16), columns=["v"])       # 3 rows a record
    for k in range(3):
        rec.event("mark", sample=k)


def _closed(path: Path) -> Path:
    rec = SessionRecorder(path, catalogue=False, fs_hz=100.0)
    _write(rec)
    rec.close()
    return path


def _copy_when_written(rec: SessionRecorder, live: Path, dest: Path, counts: dict[str, int]) -> Path:
    """A crash: once the writer has written ``counts`` records per stream (bounded wait), a copy of
    its live folder, as a writer killed then would leave it; then the writer is closed."""
    ev = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        st = rec.stats()["streams"]
        if all(st.get(k, {}).get("records") == v for k, v in counts.items()):
            break
        ev.wait(0.01)
    shutil.copytree(live, dest)
    rec.close()
    return dest


def _crashed(path: Path, tmp: Path) -> Path:
    """What a writer killed mid-session leaves: a copy of its live folder."""
    live = tmp / "live"
    rec = SessionRecorder(live, catalogue=False, fs_hz=100.0)
    _write(rec)
    return _copy_when_written(rec, live, path, {"x": N, "w": N, "events": 3})


def _x(s: Path) -> Path:
    return s / "streams" / "x.clog"


def _first(p: Path) -> int:
    return p.stat().st_size - N * REC          # where the records start


def _values(s: Path) -> list[float]:
    return SessionReader(s).read_array("x")[1][:, 0].tolist()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- the lock
@pytest.mark.req("SR-43")
def test_recover_refuses_a_folder_being_recorded_and_changes_nothing(tmp_path):
    s = tmp_path / "s"
    rec = SessionRecorder(s, catalogue=False)
    rec.write_row("x", 0, [1.0])
    before = (s / "manifest.json").read_bytes()
    with pytest.raises(SessionBusy, match=r"being recorded by live process \d+"):
        recover(s)
    assert (s / "manifest.json").read_bytes() == before and not (s / "corrupt").exists()
    rec.close()
    rep = recover(s)
    assert rep["changed"] is False and rep["state"] == "closed"


@pytest.mark.req("SR-43")
def test_recover_lets_go_of_the_lock_when_it_refuses(tmp_path):
    s = _closed(tmp_path / "s")
    p = _x(s)
    info = SessionReader(s).stream_info("x")
    js = json.dumps(info).encode()
    head = struct.pack("<4sHI", b"CLOG", 9, len(js)) + js
    newer = head + struct.pack("<I", zlib.crc32(head)) + p.read_bytes()[_first(p):]
    p.write_bytes(newer)
    manifest = (s / "manifest.json").read_bytes()
    with pytest.raises(CorruptSessionError, match=r"x\.clog: stream format version 9 is newer .*recover changed nothing"):
        recover(s)
    assert p.read_bytes() == newer and (s / "manifest.json").read_bytes() == manifest
    with SessionLock(s, "recording"):             # free again
        pass


@pytest.mark.req("SR-43")
def test_a_writer_is_refused_while_recover_works(tmp_path, monkeypatch):
    s = _crashed(tmp_path / "s", tmp_path)
    seen = []
    real = repair_mod._recover_locked

    def locked(path, catalogue):
        try:
            SessionLock(path, "recording").acquire()
        except SessionBusy as exc:
            seen.append(str(exc))
        return real(path, catalogue)
    monkeypatch.setattr(repair_mod, "_recover_locked", locked)
    assert recover(s)["state"] == "recovered"
    assert len(seen) == 1 and "being recovered by live process" in seen[0] and "wait for it to finish" in seen[0]


def test_recover_needs_a_writable_folder(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CorruptSessionError, match="not a folder"):
        recover(tmp_path / "f")
    with pytest.raises(CorruptSessionError, match="not a folder"):
        recover(tmp_path / "nothing")
    s = _closed(tmp_path / "s")

    def refuse(self):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(repair_mod.SessionLock, "acquire", refuse)
    with pytest.raises(CorruptSessionError, match=r"cannot write in the folder \(Permission denied\); recover must "
                                                  "rewrite the manifest"):
        recover(s)


# ---------------------------------------------------------------------------- a sound folder
def test_a_closed_session_that_verifies_is_left_exactly_as_it_is(tmp_path):
    s = _closed(tmp_path / "s")
    before = {p: p.read_bytes() for p in s.rglob("*") if p.is_file()}
    rep = recover(s)
    assert rep == {"state": "closed", "streams": {}, "files": {}, "actions": [], "manifest": rep["manifest"],
                   "changed": False}
    assert {p: p.read_bytes() for p in s.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------- crashes
@pytest.mark.req("SR-40", "SR-41")
def test_a_crashed_session_gets_its_counts_and_checksums(tmp_path):
    s = _crashed(tmp_path / "s", tmp_path)
    m = json.loads((s / "manifest.json").read_text())
    assert m["state"] == "recording" and "files" not in m
    rep = recover(s)
    assert rep["changed"] is True and rep["state"] == "recovered"
    assert rep["streams"]["x"] == {"header": "intact", "records": N, "rows": N, "cut_bytes": 0, "damaged_regions": 0}
    m = rep["manifest"]
    assert m == json.loads((s / "manifest.json").read_text())
    assert m["state"] == "recovered" and m["recovery"] == {"streams": rep["streams"], "files": rep["files"],
                                                          "actions": rep["actions"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["recovered_utc"])
    assert sorted(m["files"]) == ["streams/events.clog", "streams/w.clog", "streams/x.clog"]
    for rel, meta in m["files"].items():
        assert meta == {"bytes": (s / rel).stat().st_size, "sha256": _sha(s / rel)}
    x = m["streams"]["x"]
    assert (x["records"], x["rows"], x["first_sample"], x["last_sample"]) == (N, N, 0, 90)
    assert (x["kind"], x["dtype"], x["n_columns"], x["rate_hz"]) == ("array", "<f8", 2, 100.0)
    assert x["sha256"] == _sha(_x(s)) and x["bytes"] == _x(s).stat().st_size and "header_problem" not in x
    assert m["streams"]["events"]["records"] == 3 and m["streams"]["events"]["rows"] == 3
    assert m["streams"]["w"]["records"] == N and m["streams"]["w"]["rows"] == 3 * N
    assert verify_session(s)["ok"] and not (s / ".lock").exists()
    before = (s / "manifest.json").read_bytes()
    again = recover(s)                                        # recovered and verified: left alone
    assert again["changed"] is False and again["streams"] == {} and again["state"] == "recovered"
    assert (s / "manifest.json").read_bytes() == before


@pytest.mark.req("SR-40", "SR-41")
@pytest.mark.parametrize("cut", [1, 20, 36, REC - 1])
def test_a_torn_tail_is_cut_at_the_last_intact_record_and_kept_aside(tmp_path, cut):
    s = _crashed(tmp_path / "s", tmp_path)
    p = _x(s)
    whole = p.read_bytes()
    torn = whole[:len(whole) - cut]                           # the last record, torn `cut` bytes short
    p.write_bytes(torn)
    inode = p.stat().st_ino
    rep = recover(s)
    boundary = len(whole) - REC
    assert p.read_bytes() == whole[:boundary]
    assert p.stat().st_ino == inode                           # cut in place: a big file is not copied
    st = rep["streams"]["x"]
    assert (st["records"], st["rows"], st["cut_bytes"], st["damaged_regions"]) == (N - 1, N - 1, REC - cut, 1)
    assert (s / "corrupt" / f"x.{boundary}.bin").read_bytes() == torn[boundary:]
    assert f"x: cut {REC - cut} damaged bytes in 1 region(s) (kept in corrupt/); {N - 1} intact records kept" \
        in rep["actions"]
    assert [k for k, _ in scan_stream(p)] == ["record"] * (N - 1)        # every record left passes its CRC
    assert _values(s) == [float(i) for i in range(N - 1)]
    assert rep["files"] == {"streams/x.clog": "repaired; checksum recomputed"}
    assert rep["manifest"]["files"]["streams/x.clog"]["sha256"] == _sha(p)
    assert verify_session(s)["ok"]


@pytest.mark.req("SR-40", "SR-41")
def test_damage_in_the_middle_is_moved_aside_and_every_intact_record_kept_in_order(tmp_path, caplog):
    s = _closed(tmp_path / "s")
    p = _x(s)
    b = bytearray(p.read_bytes())
    first = _first(p)
    b[first + 2 * REC + 40] ^= 0xFF                           # the payload of record 2
    b[first + 6 * REC + 1] ^= 0xFF                            # the marker of record 6
    p.write_bytes(bytes(b))
    w = s / "streams" / "w.clog"
    wb = bytearray(w.read_bytes())
    wb[-3 - 4 * (36 + 6)] ^= 0xFF                             # one record in the middle of a 3-row stream
    w.write_bytes(bytes(wb))
    ev = s / "streams" / "events.clog"
    ev.write_bytes(ev.read_bytes()[:-5])                      # the last event, torn
    with caplog.at_level(logging.INFO, logger="cortexlink.io.session_log"):
        rep = recover(s)
    assert rep["streams"]["w"]["records"] == N - 1 and rep["streams"]["w"]["rows"] == 3 * (N - 1)
    assert SessionReader(s).read_array("w")[1][:, 0].tolist() == [v for v in range(N) if v != 5 for _ in range(3)]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(p))]
    assert logged == [f"{p}: removed 2 damaged region(s), {2 * REC} bytes (kept in {s / 'corrupt'}); "
                      f"{N - 2} intact records kept"]
    assert rep["streams"]["events"]["records"] == 2 and rep["streams"]["events"]["rows"] == 2
    st = rep["streams"]["x"]
    assert (st["records"], st["cut_bytes"], st["damaged_regions"]) == (N - 2, 2 * REC, 2)
    assert _values(s) == [0.0, 1.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]
    assert SessionReader(s).read_array("x")[0].tolist() == [0, 10, 30, 40, 50, 70, 80, 90]
    assert (s / "corrupt" / f"x.{first + 2 * REC}.bin").read_bytes() == bytes(b[first + 2 * REC:first + 3 * REC])
    assert (s / "corrupt" / f"x.{first + 6 * REC}.bin").read_bytes() == bytes(b[first + 6 * REC:first + 7 * REC])
    assert p.read_bytes()[:first] == bytes(b[:first])         # the header as it was
    assert not list(s.rglob("*.repair"))
    assert rep["manifest"]["streams"]["x"]["records"] == N - 2
    assert [e["sample"] for e in SessionReader(s).events("mark")] == [0, 1]
    assert verify_session(s)["ok"]


@pytest.mark.req("SR-40", "SR-41")
def test_records_missing_from_a_closed_session_are_counted_as_lost(tmp_path):
    s = _closed(tmp_path / "s")
    p = _x(s)
    p.write_bytes(p.read_bytes()[:-2 * REC])                  # cut at a record boundary: no damage to see
    rep = recover(s)
    st = rep["streams"]["x"]
    assert st["records"] == N - 2 and st["records_lost"] == 2 and st["damaged_regions"] == 0
    assert "x: 2 record(s) fewer than the manifest recorded at close; they are lost (the file was cut short)" \
        in rep["actions"]
    assert rep["files"]["streams/x.clog"] == "repaired; checksum recomputed" and rep["changed"]
    assert rep["manifest"]["files"]["streams/x.clog"]["sha256"] == _sha(p)
    assert verify_session(s)["ok"]


@pytest.mark.req("SR-40")
def test_a_crashed_session_has_no_record_count_to_lose_against(tmp_path):
    s = _crashed(tmp_path / "s", tmp_path)
    p = _x(s)
    p.write_bytes(p.read_bytes()[:-REC])
    rep = recover(s)
    assert rep["streams"]["x"]["records"] == N - 1 and "records_lost" not in rep["streams"]["x"]
    assert verify_session(s)["ok"]


# ---------------------------------------------------------------------------- files and manifest
@pytest.mark.req("SR-41")
@pytest.mark.parametrize("state", ["closed", "stopped", "recovered"])
def test_a_damaged_file_recover_cannot_repair_keeps_its_recorded_checksum(tmp_path, state):
    s = _closed(tmp_path / "s")
    m0 = json.loads((s / "manifest.json").read_text())
    m0["state"] = state
    (s / "manifest.json").write_text(json.dumps(m0))
    assert recover(s) == {"state": state, "streams": {}, "files": {}, "actions": [], "changed": False,
                          "manifest": m0}                # it verifies: nothing to do
    (s / "streams" / "events.clog").unlink()
    rep = recover(s)
    assert "streams/events.clog: missing (was listed with a checksum)" in rep["actions"]
    assert rep["files"]["streams/events.clog"] == "missing" and rep["changed"] is False
    assert rep["state"] == state and rep["manifest"]["files"] == m0["files"]
    assert rep["streams"]["x"] == {"header": "intact", "records": N, "rows": N, "cut_bytes": 0, "damaged_regions": 0}
    assert not any("fewer" in a for a in rep["actions"])
    assert json.loads((s / "manifest.json").read_text()) == m0
    assert any("events.clog: missing" in x for x in verify_session(s)["problems"])


@pytest.mark.req("SR-41")
def test_a_listed_stream_whose_file_is_gone_is_named_after_a_crash(tmp_path):
    s = _crashed(tmp_path / "s", tmp_path)
    m = json.loads((s / "manifest.json").read_text())
    m["files"] = {"streams/x.clog": {"bytes": 1, "sha256": "0" * 64}}
    (s / "manifest.json").write_text(json.dumps(m))
    _x(s).unlink()
    rep = recover(s)
    assert "x: listed in the manifest but its file streams/x.clog is missing" in rep["actions"]
    assert rep["files"]["streams/x.clog"] == "missing"
    assert rep["manifest"]["files"]["streams/x.clog"] == {"bytes": 1, "sha256": "0" * 64}
    assert not verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_damaged_decoder_is_named_and_not_blessed(tmp_path):
    live = tmp_path / "live"
    rec = SessionRecorder(live, catalogue=False)
    (live / "decoders").mkdir()
    (live / "decoders" / "d.npz").write_bytes(b"weights")
    rec.event("decoder", file="decoders/d.npz")
    rec.write_row("x", 0, [1.0])
    _copy_when_written(rec, live, tmp_path / "s", {"x": 1})
    s = tmp_path / "s"
    (s / "decoders" / "d.npz").write_bytes(b"weights, changed")
    rep = recover(s)
    assert rep["files"]["decoders/d.npz"].startswith("damaged: SHA-256 does not match")
    assert any(a.startswith("decoders/d.npz: SHA-256 does not match the one recorded") for a in rep["actions"])
    assert rep["manifest"]["files"]["decoders/d.npz"] == {"bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert not verify_session(s)["ok"]


@pytest.mark.req("SR-40")
def test_a_lost_manifest_is_replaced_by_its_last_complete_update_or_rebuilt(tmp_path):
    s = _closed(tmp_path / "s")
    m = s / "manifest.json"
    text = m.read_text()
    m.rename(s / "manifest.json.tmp")
    rep = recover(s)
    assert rep["actions"][0] == "manifest.json was missing; its last complete update (manifest.json.tmp) put in place"
    assert rep["changed"] and json.loads(m.read_text())["session_id"] == json.loads(text)["session_id"]
    assert not (s / "manifest.json.tmp").exists() and verify_session(s)["ok"]
    m.unlink()
    (s / "manifest.json.tmp").write_text(text[:50])                # torn: not used
    rep = recover(s)
    assert rep["actions"][0].startswith("manifest.json was missing; rebuilt from the stream headers (lost: ")
    assert "config, seeds, provenance" in rep["actions"][0]
    assert rep["manifest"]["manifest_rebuilt"]["from"] == "stream headers"
    assert _values(s) == [float(i) for i in range(N)] and verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_damaged_header_is_rebuilt_from_the_manifest_and_every_record_kept(tmp_path):
    s = _closed(tmp_path / "s")
    p = _x(s)
    b = bytearray(p.read_bytes())
    b[12] ^= 0x20                                              # in the header's JSON
    p.write_bytes(bytes(b))
    rep = recover(s)
    assert rep["streams"]["x"]["header"].startswith("rebuilt from the manifest (stream header damaged")
    assert any("x: stream header damaged" in a and "rebuilt from the manifest's copy" in a for a in rep["actions"])
    assert _values(s) == [float(i) for i in range(N)] and verify_session(s)["ok"]
    assert rep["files"]["streams/x.clog"] == "repaired; checksum recomputed"


@pytest.mark.req("SR-41")
def test_a_header_that_cannot_be_rebuilt_is_left_and_no_checksum_is_blessed(tmp_path):
    s = _crashed(tmp_path / "s", tmp_path)
    m = json.loads((s / "manifest.json").read_text())
    del m["streams"]["x"]                                      # the manifest has no copy of its header
    (s / "manifest.json").write_text(json.dumps(m))
    p = _x(s)
    b = bytearray(p.read_bytes())
    b[12] ^= 0x20
    p.write_bytes(bytes(b))
    rep = recover(s)
    assert rep["streams"]["x"]["header"].startswith("damaged, left as it is (")
    assert rep["streams"]["x"]["header"].endswith("; the manifest holds no copy of it)")
    assert p.read_bytes() == bytes(b)
    assert "streams/x.clog" not in rep["manifest"]["files"]
    assert rep["manifest"]["streams"]["x"]["header_problem"].startswith("stream header damaged")
    assert rep["manifest"]["streams"]["x"]["bytes"] == len(b)
    assert not verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_foreign_file_without_records_is_moved_aside_and_stays_named(tmp_path):
    s = _closed(tmp_path / "s")
    _x(s).write_bytes(b"%PDF-1.4 " + bytes(100))
    (s / "streams" / "w.clog").write_bytes(b"GIF89a" + bytes(100))
    rep = recover(s)
    problem = "not a cortexlink stream file (magic b'%PDF', expected b'CLOG')"
    assert rep["streams"]["x"] == {"records": 0, "rows": 0, "cut_bytes": 0, "damaged_regions": 0,
                                   "header": f"foreign file ({problem})", "moved_aside": problem}
    assert "x: x.clog is not a cortexlink stream file and holds no record (its data are lost); moved to " \
        "corrupt/x.clog" in rep["actions"]
    assert (s / "corrupt" / "x.clog").read_bytes().startswith(b"%PDF")
    assert (s / "corrupt" / "w.clog").read_bytes().startswith(b"GIF89a")
    st = rep["manifest"]["streams"]["x"]
    assert st["file_missing"].startswith("moved to corrupt/ by recover (not a cortexlink stream file")
    assert any("x.clog: missing (moved to corrupt/" in x for x in verify_session(s)["problems"])


@pytest.mark.req("SR-40", "SR-41")
def test_a_file_that_lost_its_whole_header_keeps_its_records(tmp_path):
    s = _closed(tmp_path / "s")
    p = _x(s)
    whole = p.read_bytes()
    p.write_bytes(whole[_first(p):])                           # starts right at the first record
    rep = recover(s)
    assert rep["streams"]["x"]["records"] == N and "moved_aside" not in rep["streams"]["x"]
    assert rep["streams"]["x"]["header"].startswith("rebuilt from the manifest (not a cortexlink stream file")
    assert _values(s) == [float(i) for i in range(N)] and verify_session(s)["ok"]
    p.write_bytes(p.read_bytes()[:_first(p) + REC][_first(p):])    # a single record, no header
    rep = recover(s)
    assert rep["streams"]["x"]["records"] == 1 and _values(s) == [0.0]


@pytest.mark.req("SR-41")
@pytest.mark.parametrize("damage, problem", [
    (lambda b: b[:5], "stream header damaged (file is 5 bytes, shorter than a stream header; truncated before "
                      "anything was recorded)"),
    (lambda b: b[:11] + bytes([b[11] ^ 0x20]) + b[12:], "stream header damaged (checksum mismatch)"),
])
def test_the_action_names_the_header_damage_once(tmp_path, damage, problem):
    s = _closed(tmp_path / "s")
    p = _x(s)
    p.write_bytes(damage(p.read_bytes()))
    rep = recover(s)
    assert any(a.startswith(f"x: {problem}; rebuilt from the manifest's copy, every record after it kept")
               for a in rep["actions"]), rep["actions"]
    assert SessionReader(s).stream_info("x")["columns"] == ["a", "b"] and verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_header_the_records_do_not_fit_is_not_rebuilt(tmp_path):
    s = _closed(tmp_path / "s")
    m = json.loads((s / "manifest.json").read_text())
    m["streams"]["x"]["header"]["columns"] = ["a", "b", "c"]   # 24-byte rows; the records hold 16
    (s / "manifest.json").write_text(json.dumps(m))
    p = _x(s)
    b = bytearray(p.read_bytes())
    b[12] ^= 0x20
    p.write_bytes(bytes(b))
    rep = recover(s)
    assert rep["streams"]["x"]["header"].endswith("the records do not decode with the manifest's description)")
    assert any(a.startswith("x: stream header damaged (checksum mismatch) and not rebuilt (the records do not "
                            "decode") for a in rep["actions"])
    assert p.read_bytes() == bytes(b)


def _format_1(p: Path, **change) -> None:
    h = SessionReader(p.parent.parent).stream_info(p.stem) | change
    js = json.dumps(h).encode()
    p.write_bytes(struct.pack("<4sHI", b"CLOG", 1, len(js)) + js + p.read_bytes()[_first(p):])


def _format_1_manifest(s: Path, *, closed: bool) -> None:
    m = json.loads((s / "manifest.json").read_text())
    for st in m["streams"].values():
        st.pop("header", None)
    m["format_version"] = 1
    if closed:
        m["files"] = {rel: {"bytes": (s / rel).stat().st_size, "sha256": _sha(s / rel)} for rel in m["files"]}
    else:
        m.update(state="recording")
        m.pop("files")
    (s / "manifest.json").write_text(json.dumps(m))


@pytest.mark.req("SR-41")
def test_a_format_1_header_is_checked_against_the_manifest(tmp_path):
    s = _closed(tmp_path / "s")
    _format_1(_x(s))
    _format_1_manifest(s, closed=False)
    rep = recover(s)
    assert rep["streams"]["x"]["header"] == "intact"           # it agrees with the manifest
    s = _closed(tmp_path / "t")
    _format_1(_x(s), rate_hz=50.0)                             # it disagrees: rebuilt from the manifest
    _format_1_manifest(s, closed=False)
    rep = recover(s)
    assert rep["streams"]["x"]["header"] == ("rebuilt from the manifest (format-1 header disagrees with the "
                                             "manifest (rate_hz 50.0, but the manifest says 100.0))")
    assert SessionReader(s).stream_info("x")["rate_hz"] == 100.0 and _values(s) == [float(i) for i in range(N)]


@pytest.mark.req("SR-41")
def test_a_format_1_header_checksummed_at_close_is_trusted(tmp_path):
    s = _closed(tmp_path / "s")
    _format_1(_x(s), rate_hz=50.0)                             # as it was when the session was closed
    _format_1_manifest(s, closed=True)
    ev = s / "streams" / "events.clog"
    ev.write_bytes(ev.read_bytes()[:-5])                      # something else for recover to do
    rep = recover(s)
    assert rep["streams"]["x"]["header"] == "intact" and rep["streams"]["events"]["records"] == 2
    assert SessionReader(s).stream_info("x")["rate_hz"] == 50.0


@pytest.mark.req("SR-32", "SR-41")
def test_decoders_named_by_a_rebuilt_manifest_keep_their_checksums(tmp_path):
    live = tmp_path / "live"
    rec = SessionRecorder(live, catalogue=False)
    (live / "decoders").mkdir()
    for name in ("d1", "d2"):
        (live / "decoders" / f"{name}.npz").write_bytes(b"weights")
        rec.event("decoder", file=f"decoders/{name}.npz")
    _copy_when_written(rec, live, tmp_path / "s", {"events": 2})   # a crash ...
    s = tmp_path / "s"
    (s / "manifest.json").unlink()                              # ... that lost the manifest
    (s / "decoders" / "d1.npz").write_bytes(b"weights, changed")
    (s / "decoders" / "d2.npz").unlink()
    sha = hashlib.sha256(b"weights").hexdigest()
    rep = recover(s)
    assert rep["manifest"]["files"]["decoders/d1.npz"] == {"bytes": 16, "sha256": sha}
    assert rep["manifest"]["files"]["decoders/d2.npz"] == {"bytes": 0, "sha256": sha}
    assert rep["files"]["decoders/d2.npz"] == "missing" and rep["files"]["decoders/d1.npz"].startswith("damaged")
    problems = verify_session(s)["problems"]
    assert any("d1.npz: SHA-256 does not match" in x for x in problems)
    assert any("d2.npz: missing" in x for x in problems)


@pytest.mark.req("SR-40")
def test_a_stream_file_the_manifest_does_not_list_is_counted_but_not_blessed_in_a_closed_session(tmp_path):
    _closed(tmp_path / "other")
    s = _closed(tmp_path / "s")                                # closed: a file added later is not blessed
    shutil.copyfile(_x(tmp_path / "other"), s / "streams" / "extra.clog")
    rep = recover(s)
    assert rep["streams"]["extra"]["records"] == N and "records_lost" not in rep["streams"]["extra"]
    assert rep["changed"] is False and "extra" not in rep["manifest"]["streams"]
    assert any("extra.clog: not listed in the manifest" in x for x in verify_session(s)["problems"])
    s = _crashed(tmp_path / "t", tmp_path)                     # after a crash: counted and checksummed
    shutil.copyfile(_x(tmp_path / "other"), s / "streams" / "extra.clog")
    rep = recover(s)
    p = s / "streams" / "extra.clog"
    assert rep["manifest"]["streams"]["extra"] == {
        "kind": "array", "records": N, "rows": N, "first_sample": 0, "last_sample": 90, "bytes": p.stat().st_size,
        "sha256": _sha(p), "dtype": "<f8", "n_columns": 2, "rate_hz": 100.0}
    assert verify_session(s)["ok"]


@pytest.mark.req("SR-40")
def test_a_declared_stream_never_written_is_not_called_missing(tmp_path):
    live = tmp_path / "live"
    rec = SessionRecorder(live, catalogue=False)
    rec.declare("quiet", columns=["a"])
    rec.write_row("x", 0, [1.0])
    _copy_when_written(rec, live, tmp_path / "s", {"x": 1})
    rep = recover(tmp_path / "s")
    assert not any("quiet" in a for a in rep["actions"]) and "file_missing" not in rep["manifest"]["streams"]["quiet"]
    assert verify_session(tmp_path / "s")["ok"]


# ---------------------------------------------------------------------------- finalize
@pytest.mark.req("SR-40")
def test_finalize_counts_the_intact_records_of_a_stream_left_torn(tmp_path):
    # (close() after a write error whose truncation failed: recover cuts the tail later)
    s = _crashed(tmp_path / "s", tmp_path)
    p = _x(s)
    p.write_bytes(p.read_bytes()[:-7])
    m = finalize(s, state="stopped")
    assert m["streams"]["x"]["records"] == N - 1 and m["streams"]["x"]["last_sample"] == 80
    assert m["files"]["streams/x.clog"]["bytes"] == p.stat().st_size


@pytest.mark.req("SR-41")
def test_finalize_checksums_every_file_but_its_own_and_the_scratch_files(tmp_path):
    s = _crashed(tmp_path / "s", tmp_path)
    (s / "decoders").mkdir()
    (s / "decoders" / "d.npz").write_bytes(b"d")
    for junk in ("manifest.json.tmp", "streams/x.clog.repair", "streams/y.clog.rebuild", "corrupt/x.0.bin"):
        (s / junk).parent.mkdir(exist_ok=True)
        (s / junk).write_bytes(b"junk")
    kept = {"bytes": 3, "sha256": "a" * 64}
    m = finalize(s, state="closed", extra={"note": 1, "gone": None},
                 keep={"decoders/d.npz": kept, "decoders/old.npz": kept, "streams/events.clog": kept})
    assert sorted(m["files"]) == ["decoders/d.npz", "decoders/old.npz", "streams/events.clog", "streams/w.clog",
                                  "streams/x.clog"]
    assert m["files"]["decoders/d.npz"] == kept and m["files"]["decoders/old.npz"] == kept
    assert m["files"]["streams/x.clog"] == {"bytes": _x(s).stat().st_size, "sha256": _sha(_x(s))}
    assert m["streams"]["events"]["sha256"] == "a" * 64 and m["streams"]["events"]["bytes"] == 3
    assert m["state"] == "closed" and m["note"] == 1 and "gone" not in m and m["closed_utc"]
    assert json.loads((s / "manifest.json").read_text()) == m


def test_finalize_keeps_a_declared_stream_that_never_wrote_without_calling_it_missing(tmp_path):
    s = tmp_path / "s"
    rec = SessionRecorder(s, catalogue=False)
    rec.declare("quiet", columns=["a"])
    m = rec.close()
    assert "quiet" in m["streams"] and "file_missing" not in m["streams"]["quiet"]
    assert verify_session(s)["ok"]


# ---------------------------------------------------------------------------- the catalogue
def test_recover_registers_the_session_in_the_catalogue(tmp_path, monkeypatch):
    monkeypatch.delenv("CORTEXLINK_CATALOGUE", raising=False)
    s = _crashed(tmp_path / "s", tmp_path)
    shutil.copytree(s, tmp_path / "t")
    cat = tmp_path / "cat.sqlite"
    rep = recover(s, catalogue=cat)
    sid = rep["manifest"]["session_id"]
    assert rep["actions"][-1] == f"registered {sid} ({s.resolve()})"
    monkeypatch.setenv("CORTEXLINK_CATALOGUE", str(cat))
    rep = recover(tmp_path / "t")                              # a copy: refused by the catalogue, folder fine
    assert rep["actions"][-1].startswith(f"not registered in the catalogue {cat}: ")
    assert "one is a copy of the other" in rep["actions"][-1] and rep["state"] == "recovered"
    with Catalogue(cat) as c:
        assert [x["path"] for x in c.sessions()] == [str(s.resolve())]
    assert repair_mod._register(s, False) is None
    monkeypatch.delenv("CORTEXLINK_CATALOGUE")
    assert repair_mod._register(s, None) is None
    monkeypatch.setenv("CORTEXLINK_CATALOGUE", "")
    assert repair_mod._register(s, None) is None
