"""Fault cases: writing commands (see :mod:`cortexlink.bench.faults`; registered through
:mod:`~cortexlink.bench.faults.inputs`, area ``writing``).

``export``, ``record``, ``replay``, ``serve`` and the run folders of ``session run``, given a place
they must not write (a session's own files, a file cortexlink did not make, a system folder, a
name that leaves ``--out``), a disk too small, a read-only folder or bad numbers: each must refuse
with a clear error, write nothing where it must not and lose nothing
(:mod:`cortexlink.core.outpath` is the one output-path check they share). A recording started
from the operator UI that fills its disk must stop, raise a fault and say so.

Small file systems are real where this process may mount one (a tmpfs, as root); else a real
file-size limit (``RLIMIT_FSIZE``, as ``ulimit -f``) stands in for the full disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json as _json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cortexlink.bench.faults.base import Outcome, case, clean_message, describe, run_cli

_W_NO_CAT = ("--catalogue", "none")


def _w_record(work: Path, name: str = "S", seconds: float = 2.0, channels: int = 64) -> Path:
    out = work / name
    p = run_cli(["record", "--sim", "--channels", str(channels), "--seconds", str(seconds), "--seed", "1",
                 "--out", out, "--status-interval", "0", *_W_NO_CAT], timeout_s=90)
    if p.returncode != 0:
        raise RuntimeError(f"could not record the session to write over: {describe(p)}")
    return out


def _w_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (to tell whether a refused command changed any)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _w_refused(p, *needles: str, untouched: bool = True, lost: bool | None = None, extra: str = "") -> Outcome:
    """A command that had to refuse: exit status 2, no traceback, the message names ``needles``."""
    ok = clean_message(p, *needles)
    return Outcome(survived=p.returncode == 2 and ok and untouched, data_lost=lost, exit_code=p.returncode,
                   message_ok=ok, detail=describe(p) + extra)


@contextlib.contextmanager
def _w_mount_tmpfs(folder: Path, size: int, read_only: bool = False):
    """Mount a small tmpfs on ``folder`` when this process may (root allowed to mount); yields True
    then, else False (the caller falls back to a file-size limit or a read-only mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and mount and umount:
        opts = f"size={size},mode=0755" + (",ro" if read_only else "")
        p = subprocess.run([mount, "-t", "tmpfs", "-o", opts, "cortexlink-fault", str(folder)],
                           capture_output=True, timeout=10)
        mounted = p.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run([umount, "-l", str(folder)], capture_output=True, timeout=10)


@contextlib.contextmanager
def _w_file_limit(nbytes: int):
    """RLIMIT_FSIZE (``ulimit -f``) of this process and the commands it starts, restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _w_export_over(work: Path, rel: str) -> Outcome:
    s = _w_record(work)
    before = _w_digest(s)
    p = run_cli(["export", s, "--to", s / rel, "--overwrite"], timeout_s=60)
    after = _w_digest(s)
    return _w_refused(p, "recorded session folder", untouched=after == before, lost=after != before)


@case("writing", timeout_s=120)
def export_over_own_raw_clog(work: Path) -> Outcome:
    """export --to S/streams/raw.clog --overwrite: refused, the session's raw stream untouched"""
    return _w_export_over(work, "streams/raw.clog")


@case("writing", timeout_s=120)
def export_over_own_manifest(work: Path) -> Outcome:
    """export --to S/manifest.json --overwrite: refused, the manifest untouched"""
    return _w_export_over(work, "manifest.json")


@case("writing", timeout_s=120)
def export_over_foreign_file(work: Path) -> Outcome:
    """export --overwrite over a file cortexlink did not write (a password-database look-alike): refused, untouched"""
    s = _w_record(work)
    foreign = work / "etc" / "passwd"
    foreign.parent.mkdir()
    text = "root:x:0:0:root:/root:/bin/bash\nop:x:1000:1000::/home/op:/bin/sh\n"
    foreign.write_text(text)
    p = run_cli(["export", s, "--to", foreign, "--overwrite"], timeout_s=60)
    kept = foreign.read_text() == text
    return _w_refused(p, "not an NWB file written by cortexlink export", untouched=kept, lost=not kept)


@case("writing", timeout_s=120)
def export_into_system_folder(work: Path) -> Outcome:
    """export --to /proc/...nwb (a system location): refused as such, before anything is written"""
    s = _w_record(work)
    p = run_cli(["export", s, "--to", "/proc/cortexlink-fault-case.nwb", "--overwrite"], timeout_s=60)
    return _w_refused(p, "system folder /proc")


@case("writing", timeout_s=120)
def export_of_damaged_session(work: Path) -> Outcome:
    """export of a session whose raw stream lost one byte's worth of truth: refused by its checksums, no NWB"""
    s = _w_record(work)
    raw = s / "streams" / "raw.clog"
    b = bytearray(raw.read_bytes())
    b[len(b) // 2] ^= 0x01
    raw.write_bytes(bytes(b))
    out = work / "x.nwb"
    p = run_cli(["export", s, "--to", out], timeout_s=60)
    return _w_refused(p, "does not verify", "raw.clog", untouched=not out.exists())


@case("writing", timeout_s=120)
def session_name_escaping_out(work: Path) -> Outcome:
    """session run with name '../../../escaped/x': refused at load time, nothing written outside --out"""
    f = work / "esc.yaml"
    f.write_text('name: "../../../escaped/x"\nblocks:\n  - {kind: calibration, task: centre_out, seconds: 1}\n')
    out = work / "a" / "b" / "c" / "runs"
    p = run_cli(["session", "run", f, "--out", out, "--no-progress"], timeout_s=60)
    escaped = (work / "escaped").exists() or (work / "a" / "escaped").exists()
    return _w_refused(p, "session.name", "path separators", untouched=not escaped,
                      extra=" (a folder was written outside --out)" if escaped else "")


@case("writing", timeout_s=120)
def record_into_too_small_filesystem(work: Path) -> Outcome:
    """record 64 channels x 4 s into a 2 MB file system (a tmpfs, else a 2 MB file-size limit): refused before it starts"""
    small = work / "small"
    with _w_mount_tmpfs(small, 2 << 20) as mounted:
        args = ["record", "--sim", "--channels", "64", "--seconds", "4", "--out", small / "S", *_W_NO_CAT]
        if mounted:
            p, how, needle = run_cli(args, timeout_s=60), "2 MB tmpfs", "MB free"
        else:
            with _w_file_limit(2 << 20):
                p = run_cli(args, timeout_s=60)
            how, needle = "2 MB file-size limit", "ulimit -f"
        started = (small / "S").exists()
    return _w_refused(p, needle, "64 channels", untouched=not started,
                      extra=f" [{how}]" + (" (it started anyway)" if started else ""))


@case("writing", timeout_s=60)
def record_out_in_proc(work: Path) -> Outcome:
    """record --out /proc/x: a clear refusal, not a FileNotFoundError traceback"""
    p = run_cli(["record", "--sim", "--channels", "8", "--seconds", "1", "--out", "/proc/x", *_W_NO_CAT], timeout_s=60)
    return _w_refused(p, "system folder /proc")


@case("writing", timeout_s=120)
def read_only_output_folder(work: Path) -> Outcome:
    """record, export and session run into a read-only folder: clear errors, not OSError tracebacks"""
    s = _w_record(work)
    ro = work / "ro"
    with _w_mount_tmpfs(ro, 1 << 20, read_only=True) as mounted:
        if not mounted:
            ro.mkdir(exist_ok=True)
            ro.chmod(0o555)
            if os.access(ro, os.W_OK):
                ro.chmod(0o755)
                return Outcome(survived=True, message_ok=True,
                               detail="not run: this user may write into a read-only folder and may not mount one")
        f = work / "one.yaml"
        f.write_text("name: one\nimplant: {n_channels: 8}\nblocks:\n  - {kind: calibration, task: centre_out, seconds: 1}\n")
        runs = [run_cli(["record", "--sim", "--channels", "8", "--seconds", "1", "--out", ro / "S", *_W_NO_CAT],
                        timeout_s=60),
                run_cli(["export", s, "--to", ro / "x.nwb"], timeout_s=60),
                run_cli(["session", "run", f, "--out", ro / "runs", "--no-progress"], timeout_s=60)]
        if not mounted:
            ro.chmod(0o755)
    oks = [p.returncode == 2 and clean_message(p, str(ro)) and
           any(w in _w_text(p) for w in ("read-only", "not writable", "cannot create")) for p in runs]
    return Outcome(survived=all(oks), exit_code=max(p.returncode or 0 for p in runs), message_ok=all(oks),
                   detail=" | ".join(describe(p, 110) for p in runs))


def _w_text(p) -> str:
    return ((p.stdout or b"") + (p.stderr or b"")).decode("utf-8", "replace")


@case("writing", timeout_s=120)
def replay_speed_zero_or_negative(work: Path) -> Outcome:
    """replay --realtime --speed 0 (was ZeroDivisionError) and --speed -1 (was accepted): refused"""
    s = _w_record(work)
    ps = [run_cli(["replay", s, "--realtime", "--speed", v], timeout_s=60) for v in ("0", "-1")]
    oks = [p.returncode == 2 and clean_message(p, "--speed must be") for p in ps]
    return Outcome(survived=all(oks), exit_code=max(p.returncode or 0 for p in ps), message_ok=all(oks),
                   detail=" | ".join(describe(p, 100) for p in ps))


@case("writing", timeout_s=120)
def replay_negative_seconds(work: Path) -> Outcome:
    """replay --seconds -1 (was accepted, replaying nothing and calling it identical): refused"""
    s = _w_record(work)
    return _w_refused(run_cli(["replay", s, "--seconds", "-1"], timeout_s=60), "--seconds must be")


@case("writing", timeout_s=60)
def serve_port_out_of_range(work: Path) -> Outcome:
    """serve --port 70000 (was an OverflowError traceback): refused before the graph starts"""
    t0 = time.monotonic()
    p = run_cli(["serve", "--port", "70000", "--no-browser", "--record-dir", work / "recs"], timeout_s=60)
    return _w_refused(p, "--port must be a TCP port in 0..65535", extra=f" ({time.monotonic() - t0:.1f} s)")


@case("writing", timeout_s=120)
def replay_corrupt_decoder_npz(work: Path) -> Outcome:
    """replay of a session whose decoder .npz was cut short (was a BadZipFile traceback): a clear error naming it"""
    s = _w_record(work, seconds=6.5, channels=32)
    npz = sorted((s / "decoders").glob("*.npz"))
    if not npz:
        return Outcome(survived=False, message_ok=False, detail="the recording saved no decoder to damage")
    npz[0].write_bytes(npz[0].read_bytes()[:1000])
    return _w_refused(run_cli(["replay", s], timeout_s=60), npz[0].name, "damaged", "sessions verify")


@case("writing", timeout_s=120)
def record_few_channels(work: Path) -> Outcome:
    """record --channels 4 (failed on dead/saturating-channel defaults the user never set): records and verifies"""
    out = work / "S"
    p = run_cli(["record", "--sim", "--channels", "4", "--seconds", "2", "--out", out, "--status-interval", "0",
                 *_W_NO_CAT], timeout_s=90)
    v = run_cli(["sessions", "--db", work / "v.sqlite", "verify", out], timeout_s=60) if out.exists() else None
    ok = clean_message(p, "recorded")
    verified = v is not None and v.returncode == 0
    return Outcome(survived=p.returncode == 0 and ok and verified, data_lost=None if v is None else not verified,
                   exit_code=p.returncode, message_ok=ok, detail=describe(p) + ("" if verified else " (does not verify)"))


@case("writing", timeout_s=120)
def replay_after_recover_names_raw_end(work: Path) -> Outcome:
    """replay after recover cut a torn raw tail: says where the raw data end instead of a bare DIFFERENT"""
    s = _w_record(work, seconds=3.0)
    raw = s / "streams" / "raw.clog"
    os.truncate(raw, raw.stat().st_size // 2 + 7)
    rc = run_cli(["recover", s], timeout_s=60)
    p = run_cli(["replay", s], timeout_s=60)
    ok = clean_message(p, "the raw data end at sample", "identical") and "DIFFERENT" not in _w_text(p)
    return Outcome(survived=rc.returncode == 0 and p.returncode == 0 and ok, exit_code=p.returncode, message_ok=ok,
                   detail=" ".join(ln.strip() for ln in _w_text(p).splitlines()[-2:])[:220])


@case("writing", timeout_s=90)
def bench_out_over_foreign_file(work: Path) -> Outcome:
    """bench --out over a file that is not a JSON result: refused before the benchmark runs, untouched"""
    notes = work / "notes.txt"
    notes.write_text("my notes\n")
    p = run_cli(["bench", "faults", "--only", "no-such-case", "--out", notes], timeout_s=60)
    kept = notes.read_text() == "my notes\n"
    return _w_refused(p, "not a JSON result file", untouched=kept, lost=not kept)


def _w_http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else _json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, _json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _json.loads(e.read() or b"{}")


@case("writing", timeout_s=150)
def ui_recording_on_full_disk(work: Path) -> Outcome:
    """serve: a recording started from the UI fills its disk (a 1 MB tmpfs, else a 1 MB file-size limit): it stops, a fault is raised and the UI says why"""
    recs = work / "recs"
    with contextlib.ExitStack() as stack:
        mounted = stack.enter_context(_w_mount_tmpfs(recs, 1 << 20))
        if not mounted:
            stack.enter_context(_w_file_limit(1 << 20))
        how = "1 MB tmpfs" if mounted else "1 MB file-size limit"
        cmd = [sys.executable, "-m", "cortexlink.cli.main", "serve", "--port", "0", "--no-browser", "--graph",
               "operator", "--channels", "16", "--record-dir", str(recs), "--priority", "normal"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        stack.callback(_w_stop, proc)
        url, t_end = None, time.monotonic() + 60
        while url is None and time.monotonic() < t_end and proc.poll() is None:
            line = proc.stdout.readline().decode("utf-8", "replace")
            m = re.search(r"(http://\S+)", line)
            url = m.group(1).rstrip("/") if m else None
        if url is None:
            return Outcome(survived=False, message_ok=False, detail=f"the server did not start [{how}]")
        st, rep = _w_http("POST", url + "/api/control", {"cmd": "record_start", "name": "r1"})
        if st != 200:
            return Outcome(survived=False, message_ok=False, detail=f"record_start: {st} {rep} [{how}]")
        rec: dict = {}
        faults: list = []
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            st, state = _w_http("GET", url + "/api/state")
            slow = state.get("slow") or {} if st == 200 else {}
            rec = slow.get("recording") or {}
            faults = [f for f in slow.get("faults") or [] if "recording_stopped" in str(f.get("where"))]
            if not (state.get("fast") or {}).get("recording", True) and (rec.get("last") or {}).get(
                    "state") not in (None, "stopping") and faults:
                break
            time.sleep(0.2)
        health = _w_http("GET", url + "/api/health")
        last = rec.get("last") or {}
        data_lost = None
        if last.get("dir"):                   # what was written before the disk filled is readable
            from cortexlink.io.session_log import SessionReader

            try:
                data_lost = SessionReader(last["dir"], salvage=True).read_array("raw")[0].size == 0
            except Exception:  # noqa: BLE001 - unreadable afterwards is data lost
                data_lost = True
    reason = last.get("stopped_reason")
    shown = not (state.get("fast") or {}).get("recording", True)
    survived = bool(shown and reason and faults and health[0] == 200)
    return Outcome(survived=survived, data_lost=data_lost, message_ok=bool(reason and faults),
                   detail=f"[{how}] header recording={not shown}, last={last.get('state')}, reason={reason!r}, "
                          f"faults={len(faults)}, server {health[0]}")


def _w_stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
