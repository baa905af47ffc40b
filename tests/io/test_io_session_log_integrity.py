"""Session log integrity: checksummed stream headers (format 2, format 1 still read), recover never
discarding an intact record nor blessing damage, the writer's lock, manifest field checks, a lost
manifest, decoder checksums, and copies of a session registered in the catalogue."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.io.catalogue import Catalogue
from cortexlink.io.session_log import (
    CorruptSessionError, DamagedHeaderError, SessionBusy, SessionLock, SessionReader, SessionRecorder, inspect_header,
    finalize, read_file_header, recover, require_verified, verify_session,
)

FS = 30000.0


def _session(path: Path, n_ch: int = 4, n_chunks: int = 20) -> np.ndarray:
    rec = SessionRecorder(path, channel_map=ChannelMap.grid(n_ch), fs_hz=FS, catalogue=False, participant_id="P-1")
    rng = np.random.default_rng(0)
    parts = []
    for i in range(n_chunks):
        ch = Chunk(rng.integers(-2000, 2000, (30, n_ch)).astype(np.int16), FS, i * 30, 0, i)
        rec.write_raw(ch)
        parts.append(np.asarray(ch.data))
        rec.write_row("cursor", ch.end_sample, {"x": i / 10, "y": 0.5})
    rec.event("block_start", sample=0, name="b1")
    rec.close()
    return np.concatenate(parts)


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=120, **kw)


def _patch(p: Path, offset: int, data: bytes) -> None:
    with open(p, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.req("SR-41")
def test_a_changed_header_byte_is_found_and_recover_rebuilds_it(tmp_path):
    s = tmp_path / "s"
    raw = _session(s)
    p = s / "streams" / "raw.clog"
    _patch(p, 11, b"&")                                   # the reproducer: dd seek=11
    with pytest.raises(DamagedHeaderError, match=r"raw\.clog: stream header damaged \(checksum mismatch\).*recover"):
        SessionReader(s).read_array("raw")
    v = verify_session(s)
    assert not v["ok"] and any("raw.clog: stream header damaged" in x for x in v["problems"])
    rep = recover(s)
    assert rep["changed"] and rep["streams"]["raw"]["records"] == 20
    assert rep["streams"]["raw"]["header"].startswith("rebuilt from the manifest")
    assert any("raw: stream header damaged" in a and "rebuilt" in a for a in rep["actions"])
    assert "raw" in rep["manifest"]["streams"] and rep["manifest"]["streams"]["raw"]["rows"] == raw.shape[0]
    np.testing.assert_array_equal(SessionReader(s).read_array("raw")[1], raw)
    assert verify_session(s)["ok"]
    assert any(x.name.startswith("raw.header.") for x in (s / "corrupt").iterdir())   # the old bytes are kept


@pytest.mark.req("SR-41")
def test_a_byte_order_flip_in_the_header_is_refused_then_undone(tmp_path):
    s = tmp_path / "s"
    raw = _session(s)
    p = s / "streams" / "raw.clog"
    b = bytearray(p.read_bytes())
    i = b.find(b'"<i2"')
    b[i + 1:i + 2] = b">"
    p.write_bytes(bytes(b))
    with pytest.raises(DamagedHeaderError):               # never byte-swapped data
        SessionReader(s).read_array("raw")
    assert not verify_session(s)["ok"]
    recover(s)
    info = SessionReader(s).stream_info("raw")
    assert info["dtype"] == "<i2"
    np.testing.assert_array_equal(SessionReader(s).read_array("raw")[1], raw)
    assert verify_session(s)["ok"]


def _to_format_1(p: Path) -> None:
    """Rewrite a stream file with a format-1 header (no header checksum)."""
    h = inspect_header(p)
    js = json.dumps(h.info).encode()
    rest = p.read_bytes()[h.first_offset:]
    p.write_bytes(struct.pack("<4sHI", b"CLOG", 1, len(js)) + js + rest)


def test_format_1_files_are_still_read_and_recovered(tmp_path):
    s = tmp_path / "s"
    raw = _session(s)
    for p in (s / "streams").glob("*.clog"):
        _to_format_1(p)
    m = json.loads((s / "manifest.json").read_text())
    for st in m["streams"].values():                      # a format-1 manifest has no header copies
        st.pop("header")
    m.update(state="recording", format_version=1)         # and, after a crash, no checksums
    m.pop("files")
    (s / "manifest.json").write_text(json.dumps(m))
    assert inspect_header(s / "streams" / "raw.clog").version == 1
    np.testing.assert_array_equal(SessionReader(s).read_array("raw")[1], raw)
    # a format-1 header has no checksum: recover checks it against the manifest and rebuilds it
    p = s / "streams" / "raw.clog"
    b = bytearray(p.read_bytes())
    i = b.find(b'"<i2"')
    b[i + 1:i + 2] = b">"
    p.write_bytes(bytes(b))
    rep = recover(s)
    assert "format-1 header disagrees with the manifest" in rep["streams"]["raw"]["header"]
    np.testing.assert_array_equal(SessionReader(s).read_array("raw")[1], raw)
    assert inspect_header(p).version == 2 and verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_header_that_cannot_be_rebuilt_is_kept_and_named(tmp_path):
    s = tmp_path / "s"
    _session(s)
    m = json.loads((s / "manifest.json").read_text())
    m["streams"]["custom"] = {"kind": "array", "dtype": "<f8", "n_columns": 3}     # no copy, unknown columns
    (s / "manifest.json").write_text(json.dumps(m))
    rec = SessionRecorder(tmp_path / "other", catalogue=False)
    rec.write_array("custom", 0, np.ones((5, 3)), columns=["a", "b", "c"])
    rec.close()
    p = s / "streams" / "custom.clog"
    shutil.copyfile(tmp_path / "other" / "streams" / "custom.clog", p)
    _patch(p, 12, b"#")
    before = p.read_bytes()
    rep = recover(s)
    assert rep["streams"]["custom"]["header"].startswith("damaged, left as it is")
    assert any("custom" in a and "left as it is" in a for a in rep["actions"])
    assert p.read_bytes() == before                       # not one byte discarded
    v = verify_session(s)
    assert not v["ok"] and any("custom.clog: stream header damaged" in x for x in v["problems"])
    assert "streams/custom.clog" not in rep["manifest"]["files"]      # no checksum blessed on it


@pytest.mark.req("SR-41")
def test_recover_does_not_bless_a_damaged_decoder(tmp_path):
    s = tmp_path / "s"
    _session(s)
    (s / "decoders").mkdir()
    npz = s / "decoders" / "d.npz"
    np.savez(npz, w=np.arange(100.0))
    finalize(s, state="closed")                        # the decoder joins the checksums, as at close
    old = json.loads((s / "manifest.json").read_text())["files"]["decoders/d.npz"]["sha256"]
    _patch(npz, 60, b"XX")
    v = verify_session(s)
    assert not v["ok"] and any("d.npz: SHA-256 does not match" in x for x in v["problems"])
    rep = recover(s)
    assert not rep["changed"]                            # nothing it can repair: the folder is left alone
    assert any("decoders/d.npz" in a and "cannot repair" in a for a in rep["actions"])
    assert json.loads((s / "manifest.json").read_text())["files"]["decoders/d.npz"]["sha256"] == old
    assert not verify_session(s)["ok"]
    with pytest.raises(CorruptSessionError, match=r"d\.npz: SHA-256 .*sessions verify"):
        require_verified(s)
    r = _cli("recover", s, "--catalogue", "none")
    assert r.returncode == 1 and "d.npz" in r.stdout and "NOT verified" in r.stdout


_CRASH = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from cortexlink.core.types import ChannelMap, Chunk
    from cortexlink.io.session_log import SessionRecorder
    rec = SessionRecorder(sys.argv[1], channel_map=ChannelMap.grid(4), fs_hz=30000.0, catalogue=False)
    os.makedirs(os.path.join(sys.argv[1], "decoders"))
    np.savez(os.path.join(sys.argv[1], "decoders", "dec-v1.npz"), w=np.arange(50.0))
    rec.event("decoder", sample=0, name="dec-v1", file="decoders/dec-v1.npz")
    for i in range(10):
        rec.write_raw(Chunk(np.full((30, 4), i, np.int16), 30000.0, i * 30, 0, i))
    t0 = time.monotonic()
    while rec.stats()["streams"]["raw"]["records"] < 10 and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    print("written", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()
""")


@pytest.mark.req("SR-32", "SR-40", "SR-41")
def test_a_crashed_session_with_a_damaged_decoder_keeps_its_recorded_checksum(tmp_path):
    s = tmp_path / "s"
    r = subprocess.run([sys.executable, "-c", _CRASH, str(s), "kill"], capture_output=True, text=True, timeout=300)
    assert "written" in r.stdout, r.stderr
    m = json.loads((s / "manifest.json").read_text())
    assert m["state"] == "recording" and "decoders/dec-v1.npz" in m["decoders"]
    _patch(s / "decoders" / "dec-v1.npz", 40, b"!!")
    rep = recover(s)
    assert rep["streams"]["raw"]["records"] == 10
    assert rep["files"]["decoders/dec-v1.npz"].startswith("damaged")
    assert rep["manifest"]["files"]["decoders/dec-v1.npz"]["sha256"] == m["decoders"]["decoders/dec-v1.npz"]["sha256"]
    v = verify_session(s)
    assert not v["ok"] and any("dec-v1.npz" in x for x in v["problems"])


@pytest.mark.req("SR-40", "SR-43")
def test_recover_refuses_a_live_recording_and_works_after_a_crash(tmp_path):
    s = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH, str(s), "wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        before = (s / "manifest.json").read_bytes()
        with pytest.raises(SessionBusy, match=r"being recorded by live process \d+"):
            recover(s)
        assert (s / "manifest.json").read_bytes() == before          # nothing written in the middle of it
        r = _cli("recover", s, "--catalogue", "none")
        assert r.returncode == 2 and "being recorded" in r.stderr and "Traceback" not in r.stderr
        v = verify_session(s)
        assert not v["ok"] and v["live"]["purpose"] == "recording"
        with pytest.raises(SessionBusy):
            require_verified(s)
    finally:
        proc.kill()                                      # SIGKILL: the kernel releases the lock
        proc.communicate(timeout=30)
    rep = recover(s)
    assert rep["state"] == "recovered" and rep["streams"]["raw"]["records"] == 10
    assert verify_session(s)["ok"]
    assert not (s / ".lock").exists()


@pytest.mark.req("SR-43")
def test_an_open_recorder_holds_the_lock_in_process_too(tmp_path):
    rec = SessionRecorder(tmp_path / "s", catalogue=False)
    with pytest.raises(SessionBusy, match="being recorded"):
        recover(tmp_path / "s")
    with pytest.raises(SessionBusy, match="being recorded"):
        SessionLock(tmp_path / "s", "recording").acquire()
    rec.close()
    assert recover(tmp_path / "s")["changed"] is False and not (tmp_path / "s" / ".lock").exists()


@pytest.mark.req("SR-41", "SR-52")
@pytest.mark.parametrize("field, value", [
    ("fs_hz", "fast"), ("channel_map", [1, 2]), ("streams", []), ("session_id", 7),
    ("streams.raw.bytes", "big"), ("streams.raw.header", "x"), ("files.streams/raw.clog.sha256", 5),
    ("channel_map.gain_uv", "x"),
])
def test_manifest_fields_of_the_wrong_type_are_named(tmp_path, field, value):
    s = tmp_path / "s"
    _session(s)
    m = json.loads((s / "manifest.json").read_text())
    keys = field.split(".") if not field.startswith("files.") else ["files", "streams/raw.clog", "sha256"]
    obj = m
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value
    (s / "manifest.json").write_text(json.dumps(m))
    shown = "channel_map" if field.startswith("channel_map") else field
    for call in (lambda: SessionReader(s), lambda: recover(s), lambda: Catalogue(tmp_path / "c.sqlite").register(s)):
        with pytest.raises(ValidationError, match=rf"manifest\.json: field {shown.replace('.', '[.]')}"):
            call()
    assert not verify_session(s)["ok"]
    for args in (("sessions", "--db", tmp_path / "c.sqlite", "verify", s), ("recover", s, "--catalogue", "none")):
        r = _cli(*args)
        assert r.returncode in (1, 2) and f"field {shown}" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_a_lost_manifest_is_rebuilt_from_the_stream_headers(tmp_path):
    s = tmp_path / "s"
    raw = _session(s)
    (s / "manifest.json").unlink()
    rep = recover(s)
    assert any("manifest.json was missing; rebuilt from the stream headers" in a and "config" in a
               for a in rep["actions"])
    r = SessionReader(s)
    assert r.manifest["participant_id"] == "P-1" and r.manifest["manifest_rebuilt"]["lost"]
    assert r.channel_map == ChannelMap.grid(4) and r.fs_hz == FS
    np.testing.assert_array_equal(r.read_array("raw")[1], raw)
    assert [e["kind"] for e in r.events()] == ["block_start"]
    assert verify_session(s)["ok"]


@pytest.mark.req("SR-41")
def test_a_foreign_file_in_place_of_a_stream_is_moved_aside_and_stays_named(tmp_path):
    s = tmp_path / "s"
    _session(s)
    (s / "streams" / "raw.clog").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    rep = recover(s)
    assert "moved_aside" in rep["streams"]["raw"]
    assert "raw" in rep["manifest"]["streams"]                           # never silently dropped
    assert "moved to corrupt/" in rep["manifest"]["streams"]["raw"]["file_missing"]
    v = verify_session(s)
    assert not v["ok"] and any("raw.clog: missing (moved to corrupt/" in x for x in v["problems"])


@pytest.mark.req("SR-41")
def test_a_stream_lost_after_a_crash_stays_named(tmp_path):
    s = tmp_path / "s"
    _session(s)
    m = json.loads((s / "manifest.json").read_text())
    m["state"] = "recording"                              # as a crash leaves it: no checksums
    m.pop("files")
    (s / "manifest.json").write_text(json.dumps(m))
    (s / "streams" / "raw.clog").write_bytes(b"\x00" * 300)
    rep = recover(s)
    assert "moved_aside" in rep["streams"]["raw"]
    v = verify_session(s)
    assert not v["ok"] and v["problems"] == [f"{s / 'streams' / 'raw.clog'}: missing (moved to corrupt/ by recover "
                                             "(not a cortexlink stream file (magic b'\\x00\\x00\\x00\\x00', "
                                             "expected b'CLOG')))"]
    empty = SessionRecorder(tmp_path / "e", catalogue=False).close()   # a stream declared, never written
    assert "file_missing" not in empty["streams"]["events"] and verify_session(tmp_path / "e")["ok"]


def test_require_verified_returns_the_report_of_a_sound_session(tmp_path):
    _session(tmp_path / "s")
    assert require_verified(tmp_path / "s")["ok"]


def test_a_copied_folder_does_not_move_the_catalogue_entry(tmp_path):
    s = tmp_path / "s"
    _session(s)
    shutil.copytree(s, tmp_path / "copy")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        sid = cat.register(s)
        with pytest.raises(ValidationError, match=r"one is a copy of the other; nothing was changed.*--copy"):
            cat.register(tmp_path / "copy")
        assert cat.show(sid)["path"] == str(s.resolve())
        r = cat.registration(tmp_path / "copy", as_copy=True)
        assert r["action"] == "copy" and r["session_id"] == f"{sid}~copy1" and "distinct copy" in r["message"]
        again = cat.registration(tmp_path / "copy")                        # the copy, registered again
        assert again["session_id"] == f"{sid}~copy1" and again["action"] == "copy"
        assert sorted(x["path"] for x in cat.sessions()) == sorted([str(s.resolve()), str((tmp_path / "copy").resolve())])
        assert cat.show(f"{sid}~copy1")["copy_of"] == sid
        shutil.move(s, tmp_path / "moved")                                 # a move is not a copy
        mv = cat.registration(tmp_path / "moved")
        assert mv["action"] == "moved" and "no longer holds it" in mv["message"]
        assert cat.show(sid)["path"] == str((tmp_path / "moved").resolve())
    out = _cli("sessions", "--db", tmp_path / "c.sqlite", "register", tmp_path / "copy")
    assert out.returncode == 0 and "distinct copy" in out.stdout
    shutil.copytree(tmp_path / "moved", tmp_path / "copy2")
    out = _cli("sessions", "--db", tmp_path / "c.sqlite", "register", tmp_path / "copy2")
    assert out.returncode == 2 and "--copy" in out.stderr and "Traceback" not in out.stderr
    out = _cli("sessions", "--db", tmp_path / "c.sqlite", "register", "--copy", tmp_path / "copy2")
    assert out.returncode == 0 and f"{sid}~copy2" in out.stdout


def test_an_old_catalogue_gains_the_copy_column(tmp_path):
    import sqlite3
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE sessions (session_id TEXT PRIMARY KEY, participant_id TEXT NOT NULL, path TEXT "
                      "NOT NULL, state TEXT NOT NULL, started_utc TEXT, closed_utc TEXT, n_channels INTEGER, fs_hz "
                      "REAL, seconds REAL, bytes INTEGER, cortexlink_version TEXT, git_hash TEXT, registered_utc TEXT "
                      "NOT NULL, last_verified_utc TEXT, last_verify_ok INTEGER);")
    con.close()
    _session(tmp_path / "s")
    with Catalogue(db) as cat:
        sid = cat.register(tmp_path / "s")
        assert cat.show(sid)["copy_of"] is None


@pytest.mark.req("SR-41")
def test_sessions_verify_checks_an_uncatalogued_folder_and_its_record_checksums(tmp_path):
    s = tmp_path / "s"
    _session(s)
    r = _cli("sessions", "--db", tmp_path / "c.sqlite", "verify", s)
    assert r.returncode == 0 and ": ok" in r.stdout
    p = s / "streams" / "cursor.clog"
    b = bytearray(p.read_bytes())
    b[-5] ^= 1
    p.write_bytes(bytes(b))
    r = _cli("sessions", "--db", tmp_path / "c.sqlite", "verify", s)
    assert r.returncode == 1 and "cursor.clog: damaged at byte" in r.stdout
    with Catalogue(tmp_path / "c2.sqlite") as cat:                       # catalogued: the folder is checked too
        m = json.loads((s / "manifest.json").read_text())
        m["files"]["streams/cursor.clog"]["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        m["files"]["streams/cursor.clog"]["bytes"] = p.stat().st_size
        (s / "manifest.json").write_text(json.dumps(m))
        sid = cat.register(s)
        res = cat.verify(sid)[0]
        assert not res["ok"] and any("checksum mismatch" in x for x in res["problems"])


@pytest.mark.req("SR-41")
def test_the_header_checksum_covers_magic_version_length_and_json(tmp_path):
    _session(tmp_path / "s")
    p = tmp_path / "s" / "streams" / "cursor.clog"
    h = inspect_header(p)
    data = p.read_bytes()
    (crc,) = struct.unpack_from("<I", data, h.first_offset - 4)
    assert crc == zlib.crc32(data[:h.first_offset - 4]) and h.version == 2
    assert h.info["participant_id"] == "P-1"
    raw = inspect_header(tmp_path / "s" / "streams" / "raw.clog").info
    assert ChannelMap.from_dict(raw["channel_map"]) == ChannelMap.grid(4)
    for version in (3, 0, 2 + 256):                                       # a damaged version field is damage
        q = tmp_path / f"v{version}.clog"
        q.write_bytes(data[:4] + struct.pack("<H", version % 65536) + data[6:])
        assert "damaged" in inspect_header(q).problem
    v3 = data[:4] + struct.pack("<H", 3) + data[6:h.first_offset - 4]      # format 3 is a compressed stream's
    q = tmp_path / "v3-no-codec.clog"
    q.write_bytes(v3 + struct.pack("<I", zlib.crc32(v3)) + data[h.first_offset:])
    assert inspect_header(q).problem == "stream header damaged (format 3 without a codec field)"
    newer = data[:4] + struct.pack("<H", 4) + data[6:h.first_offset - 4]
    newer += struct.pack("<I", zlib.crc32(newer)) + data[h.first_offset:]
    q = tmp_path / "newer.clog"
    q.write_bytes(newer)
    assert "newer than this cortexlink reads" in inspect_header(q).problem
    with pytest.raises(CorruptSessionError, match="upgrade cortexlink"):
        read_file_header(q)
