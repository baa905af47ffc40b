"""Fault cases: storage (see :mod:`cortexlink.bench.faults`).

Each case records a short simulated session with ``cortexlink record`` (64 channels, a few
seconds), breaks it as a failing disk or a careless user would, then runs the commands a user
would run (``sessions verify``, ``recover``, ``replay``, ``export``, ``sessions register``) and
compares what is left with what was recorded before the fault: ``data_lost`` is true when an
intact record is gone or reads back differently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cortexlink.bench.faults.base import Outcome, case, clean_message, describe, run_cli

_NO_CAT = ("--catalogue", "none")


def _record(work: Path, name: str = "S", seconds: float = 3.0, *extra: str) -> Path:
    out = work / name
    p = run_cli(["record", "--sim", "--channels", "64", "--seconds", str(seconds), "--seed", "1", "--out", out,
                 *(extra or _NO_CAT)], timeout_s=60)
    if p.returncode != 0:
        raise RuntimeError(f"could not record the session to break: {describe(p)}")
    return out


def _streams(folder: Path) -> dict[str, list]:
    """Every intact record of every stream, as ``(sample, bytes of data)``, read with salvage."""
    from cortexlink.io.session_log import SessionReader

    r = SessionReader(folder, salvage=True)
    out = {}
    for name in r.streams:
        out[name] = [(rec.sample, rec.data.tobytes() if isinstance(rec.data, np.ndarray)
                      else json.dumps(rec.data, sort_keys=True)) for rec in r.records(name)]
    return out


def _lost(before: dict[str, list], after_folder: Path, allowed: int = 0) -> tuple[bool, str]:
    """Whether records intact before the fault are missing or changed (beyond ``allowed`` damaged ones)."""
    try:
        after = _streams(after_folder)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is data lost
        return True, f"unreadable afterwards ({exc})"
    missing = 0
    for name, recs in before.items():
        have = set(after.get(name, []))
        missing += sum(1 for r in recs if r not in have)
    return missing > allowed, f"{missing} record(s) of {sum(map(len, before.values()))} missing or changed"


def _stream_file(folder: Path, name: str) -> Path:
    return folder / "streams" / f"{name}.clog"


def _header_end(p: Path) -> int:
    from cortexlink.io.session_log import inspect_header

    h = inspect_header(p)
    assert h.first_offset is not None     # the case writes an intact header first  # nosec B101
    return h.first_offset


def _text(p: subprocess.CompletedProcess) -> str:
    return ((p.stdout or b"") + (p.stderr or b"")).decode("utf-8", "replace")


def _verify(folder: Path) -> subprocess.CompletedProcess:
    return run_cli(["sessions", "--db", folder.parent / "verify.sqlite", "verify", folder], timeout_s=60)


def _recover_then_verify(work: Path, s: Path, before: dict, *, allowed: int = 0, needles: tuple = ()) -> Outcome:
    rec = run_cli(["recover", s, *_NO_CAT], timeout_s=60)
    ver = _verify(s)
    lost, how = _lost(before, s, allowed)
    ok = rec.returncode == 0 and ver.returncode == 0 and not lost
    return Outcome(survived=ok, data_lost=lost, exit_code=rec.returncode,
                   message_ok=clean_message(rec, *needles) and clean_message(ver),
                   detail=f"recover {describe(rec)}; verify exit {ver.returncode}; {how}")


@case("storage", timeout_s=60)
def storage_header_byte_flipped(work: Path) -> Outcome:
    """One byte of raw.clog's JSON header changed (dd at byte 11): verify names it, recover rebuilds the header and keeps every record."""
    s = _record(work)
    before = _streams(s)
    with open(_stream_file(s, "raw"), "r+b") as f:
        f.seek(11)
        f.write(b"&")
    ver = _verify(s)
    found = ver.returncode == 1 and clean_message(ver, "raw.clog", "header")
    o = _recover_then_verify(work, s, before, needles=("raw", "header", "rebuilt"))
    o.survived = o.survived and found
    o.detail = f"verify before recover: exit {ver.returncode}; " + o.detail
    return o


@case("storage", timeout_s=60)
def storage_header_dtype_byte_order(work: Path) -> Outcome:
    """raw.clog's header dtype "<i2" changed to ">i2": verify refuses it (no byte-swapped data), recover restores "<i2"."""
    s = _record(work)
    before = _streams(s)
    p = _stream_file(s, "raw")
    b = bytearray(p.read_bytes())
    i = b.find(b'"<i2"', 0, _header_end(p))
    b[i + 1:i + 2] = b">"
    p.write_bytes(bytes(b))
    ver = _verify(s)
    rep = run_cli(["replay", s, "--seconds", "1"], timeout_s=60)
    refused = ver.returncode == 1 and rep.returncode == 2 and clean_message(rep, "raw.clog", "header")
    o = _recover_then_verify(work, s, before, needles=("raw", "header"))
    o.survived = o.survived and refused
    o.detail = f"before recover: verify exit {ver.returncode}, replay {describe(rep)}; " + o.detail
    return o


@case("storage", timeout_s=60)
def storage_truncated_last_record(work: Path) -> Outcome:
    """raw.clog cut 100 bytes short (a torn last record): recover cuts it, keeps every other record and says so."""
    return _torn_raw_tail(work, _record(work))


def _torn_raw_tail(work: Path, s: Path) -> Outcome:
    before = _streams(s)
    p = _stream_file(s, "raw")
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 100)
    return _recover_then_verify(work, s, before, allowed=1, needles=("raw", "cut"))


@case("storage", timeout_s=60)
def storage_garbage_appended(work: Path) -> Outcome:
    """4 KiB of random bytes appended to cursor.clog: verify names it, recover cuts exactly the garbage."""
    s = _record(work)
    before = _streams(s)
    with open(_stream_file(s, "cursor"), "ab") as f:
        f.write(np.random.default_rng(7).bytes(4096))
    ver = _verify(s)
    o = _recover_then_verify(work, s, before, needles=("cursor", "cut"))
    o.survived = o.survived and ver.returncode == 1 and clean_message(ver, "cursor.clog")
    return o


@case("storage", timeout_s=60)
def storage_record_crc_flipped_mid_file(work: Path) -> Outcome:
    """One byte flipped in a raw record mid-file: reading refuses naming the offset, recover drops only that record."""
    s = _record(work)
    before = _streams(s)
    p = _stream_file(s, "raw")
    b = bytearray(p.read_bytes())
    at = _header_end(p) + (len(b) - _header_end(p)) // 5      # about 0.8 s into the raw stream
    b[at] ^= 0x5A
    p.write_bytes(bytes(b))
    rep = run_cli(["replay", s, "--seconds", "1.5"], timeout_s=60)
    o = _recover_then_verify(work, s, before, allowed=1, needles=("raw", "damaged"))
    o.survived = o.survived and rep.returncode == 2 and clean_message(rep, "raw.clog", "damaged at byte")
    o.detail = f"replay before recover: {describe(rep)}; " + o.detail
    return o


@case("storage", timeout_s=60)
def storage_manifest_deleted(work: Path) -> Outcome:
    """manifest.json deleted: recover rebuilds it from the stream headers, keeps every record and names what is lost."""
    s = _record(work)
    before = _streams(s)
    (s / "manifest.json").unlink()
    o = _recover_then_verify(work, s, before, needles=("manifest.json was missing", "lost"))
    rep = run_cli(["replay", s, "--seconds", "1"], timeout_s=60)
    o.survived = o.survived and rep.returncode == 0
    o.detail += f"; replay after: exit {rep.returncode}"
    return o


@case("storage", timeout_s=90)
def storage_manifest_field_wrong_type(work: Path) -> Outcome:
    """Manifest fields of the wrong type (streams.raw.bytes a string, channel_map a list): every command names the field, no traceback."""
    s = _record(work)
    before = _streams(s)
    mpath = s / "manifest.json"
    good = json.loads(mpath.read_text())
    cmds = [["recover", s, *_NO_CAT], ["sessions", "--db", work / "c.sqlite", "verify", s], ["replay", s],
            ["export", s, "--to", work / "out.nwb"], ["sessions", "--db", work / "c.sqlite", "register", s]]
    results = []
    for field, value in (("streams.raw.bytes", "big"), ("channel_map", [1, 2])):
        m = json.loads(json.dumps(good))
        if field == "channel_map":
            m["channel_map"] = value
        else:
            m["streams"]["raw"]["bytes"] = value
        mpath.write_text(json.dumps(m))
        for c in (cmds if field != "channel_map" else cmds[2:4]):     # every command once, two again
            p = run_cli(c, timeout_s=60)
            results.append((field, c[0] if c[0] != "sessions" else f"sessions {c[3]}", p))
    ok_msgs = [clean_message(p, field) and p.returncode in (1, 2) for field, _c, p in results]
    mpath.write_text(json.dumps(good))            # the manifest as it was: is every record still there?
    lost, how = _lost(before, s)
    bad = [f"{c} ({f}): {describe(p)}" for (f, c, p), ok in zip(results, ok_msgs) if not ok]
    return Outcome(survived=all(ok_msgs) and not lost, data_lost=lost, exit_code=results[0][2].returncode,
                   message_ok=all(ok_msgs), detail=("; ".join(bad) if bad else
                                                    f"{len(results)} commands refused naming the field; {how}"))


@case("storage", timeout_s=90)
def storage_recover_during_live_recording(work: Path) -> Outcome:
    """recover run against a recording in progress: refused (the writer holds the lock); after a SIGKILL it recovers."""
    out = work / "live"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.cli.main", "record", "--sim", "--channels", "64",
                             "--seconds", "30", "--realtime", "--seed", "1", "--out", str(out), *_NO_CAT],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not ((out / ".lock").exists() and (out / "streams" / "raw.clog").exists()):
            time.sleep(0.1)
        if not (out / "streams" / "raw.clog").exists():
            return Outcome(False, detail="the recording did not start within 40 s")
        time.sleep(0.5)
        rec = run_cli(["recover", out, *_NO_CAT], timeout_s=60)
        state = json.loads((out / "manifest.json").read_text()).get("state")
        refused = rec.returncode == 2 and clean_message(rec, "being recorded") and state == "recording"
        still = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    after = run_cli(["recover", out, *_NO_CAT], timeout_s=60)
    ver = _verify(out)
    ok = refused and still and after.returncode == 0 and ver.returncode == 0
    return Outcome(survived=ok, data_lost=False if ok else None, exit_code=rec.returncode,
                   message_ok=clean_message(rec, "being recorded"),
                   detail=f"during: {describe(rec)} (manifest state {state!r}, recorder alive {still}); after "
                          f"SIGKILL: recover exit {after.returncode}, verify exit {ver.returncode}")


@case("storage", timeout_s=60)
def storage_damaged_decoder_npz(work: Path) -> Outcome:
    """Two bytes of a saved decoder .npz changed: verify names it, recover does not bless it, replay refuses it cleanly."""
    s = _record(work, seconds=6.0)
    npz = s / "decoders" / "decoder-v1.npz"
    if not npz.exists():
        return Outcome(False, detail="the recording saved no decoder-v1.npz")
    with open(npz, "r+b") as f:
        f.seek(200)
        f.write(b"XX")
    ver = _verify(s)
    rec = run_cli(["recover", s, *_NO_CAT], timeout_s=60)
    ver2 = _verify(s)
    rep = run_cli(["replay", s], timeout_s=60)
    found = ver.returncode == 1 and clean_message(ver, "decoder-v1.npz", "SHA-256")
    not_blessed = rec.returncode == 1 and ver2.returncode == 1 and clean_message(ver2, "decoder-v1.npz")
    return Outcome(survived=found and not_blessed and clean_message(rep), data_lost=False, exit_code=rec.returncode,
                   message_ok=clean_message(rec, "decoder-v1.npz") and clean_message(rep),
                   detail=f"verify exit {ver.returncode}; recover {describe(rec)}; verify after exit "
                          f"{ver2.returncode}; replay {describe(rep)}")


@case("storage", timeout_s=60)
def storage_copied_folder_registered(work: Path) -> Outcome:
    """A copy of a catalogued session folder registered: refused (the original's entry stays); --copy registers a distinct entry."""
    db = work / "cat.sqlite"
    s = _record(work, "S", 3.0, "--catalogue", str(db))
    cp = work / "S-copy"
    shutil.copytree(s, cp)
    reg = run_cli(["sessions", "--db", db, "register", cp], timeout_s=60)
    rows = json.loads(run_cli(["sessions", "--db", db, "list", "--json"], timeout_s=60).stdout or b"[]")
    kept = [r["path"] for r in rows] == [str(s.resolve())]
    reg2 = run_cli(["sessions", "--db", db, "register", "--copy", cp], timeout_s=60)
    rows2 = json.loads(run_cli(["sessions", "--db", db, "list", "--json"], timeout_s=60).stdout or b"[]")
    both = sorted(r["path"] for r in rows2) == sorted([str(s.resolve()), str(cp.resolve())])
    ok = reg.returncode == 2 and kept and reg2.returncode == 0 and both
    return Outcome(survived=ok, data_lost=False, exit_code=reg.returncode,
                   message_ok=clean_message(reg, "copy") and clean_message(reg2, "distinct copy"),
                   detail=f"register copy: {describe(reg)}; original entry kept: {kept}; --copy: {describe(reg2)}; "
                          f"{len(rows2)} entries")


@case("storage", timeout_s=60)
def storage_crash_torn_header(work: Path) -> Outcome:
    """A recording killed while a stream's header was being written (file cut inside its header): recover rebuilds it."""
    s = _record(work)
    before = _streams(s)
    m = json.loads((s / "manifest.json").read_text())
    m["state"] = "recording"                       # as a crash leaves it: no checksums yet
    m.pop("files", None)
    (s / "manifest.json").write_text(json.dumps(m))
    p = _stream_file(s, "intent")
    with open(p, "r+b") as f:
        f.truncate(20)
    before["intent"] = []                          # its records were cut with the file: not expected back
    o = _recover_then_verify(work, s, before, needles=("intent", "header"))
    return o


@case("storage", timeout_s=90)
def storage_compressed_raw_torn_tail(work: Path) -> Outcome:
    """raw.clog recorded with --raw-codec rice, cut 100 bytes short: recover cuts the torn record, every other decodes."""
    return _torn_raw_tail(work, _record(work, "S", 3.0, *_NO_CAT, "--raw-codec", "rice"))


@case("storage", timeout_s=90)
def storage_compressed_raw_byte_flipped(work: Path) -> Outcome:
    """One byte flipped mid-file in a --raw-codec rice raw stream: recover drops that record and those coded after it up to the next resynchronisation point (at most 30, their bytes kept), nothing else."""
    s = _record(work, "S", 3.0, *_NO_CAT, "--raw-codec", "rice")
    before = _streams(s)
    p = _stream_file(s, "raw")
    b = bytearray(p.read_bytes())
    at = _header_end(p) + (len(b) - _header_end(p)) // 3
    b[at] ^= 0x5A
    p.write_bytes(bytes(b))
    o = _recover_then_verify(work, s, before, allowed=30, needles=("raw",))
    # the intact records coded after the damaged one cannot be decoded: lost by design (the price of
    # coding records against each other between resynchronisation points), so counted as lost
    o.data_lost, how = _lost(before, s, allowed=1)
    o.detail += f"; beyond the damaged record: {how}"
    return o
