"""Commands that write, and their inputs, run as a user would (a real subprocess where a limit or a
traceback matters): export, record, replay, serve, run/session run folders."""

import json
import os
import resource
import shutil
import subprocess
import sys

import pytest

from cortexlink.cli.main import main
from cortexlink.io.session_log import InsufficientDiskSpace, verify


def _cli(*args, fsize=None, timeout=300):
    """``cortexlink ARGS`` in a child process; ``fsize``: its RLIMIT_FSIZE (``ulimit -f``) in bytes."""
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, preexec_fn=limit)


@pytest.fixture(autouse=True)
def _catalogue(tmp_path, monkeypatch):
    """Sessions these tests record are registered in a catalogue of their own, never the user's."""
    monkeypatch.setenv("CORTEXLINK_CATALOGUE", str(tmp_path / "catalogue.sqlite"))


def _clean(proc, *needles):
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    for n in needles:
        assert n in text, text


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A recorded session with live decoders (calibration, fit, closed loop)."""
    d = tmp_path_factory.mktemp("w") / "s"
    r = _cli("record", "--sim", "--channels", "16", "--seconds", "6.5", "--seed", "3", "--out", d, "--catalogue",
             "none", "--status-interval", "0")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (d / "decoders").iterdir())
    return d


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_never_writes_over_the_session_or_foreign_files(session, tmp_path, capsys):
    before = _snapshot(session)
    for target in (session / "streams" / "raw.clog", session / "manifest.json", session / "out.nwb"):
        assert main(["export", str(session), "--to", str(target), "--overwrite"]) == 2
        assert "recorded session folder" in capsys.readouterr().err
    foreign = tmp_path / "passwd"
    foreign.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["export", str(session), "--to", str(foreign), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not an NWB file written by cortexlink export" in err and "replaces only files it wrote" in err
    assert foreign.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert main(["export", str(session), "--to", "/etc/cortexlink-test.nwb", "--overwrite"]) == 2
    assert "system folder /etc" in capsys.readouterr().err
    assert not os.path.exists("/etc/cortexlink-test.nwb")
    assert _snapshot(session) == before
    # what export wrote itself may be replaced
    nwb = tmp_path / "s.nwb"
    assert main(["export", str(session), "--to", str(nwb), "--no-raw", "--json"]) == 0
    assert main(["export", str(session), "--to", str(nwb), "--overwrite", "--json"]) == 0
    assert nwb.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_record_refuses_places_it_must_not_write(session, tmp_path):
    r = _cli("record", "--sim", "--channels", "8", "--seconds", "1", "--out", "/proc/x")
    assert r.returncode == 2
    _clean(r, "system folder /proc")
    r = _cli("record", "--sim", "--channels", "8", "--seconds", "1", "--out", session)
    assert r.returncode == 2
    _clean(r, "is the recorded session folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    r = _cli("record", "--sim", "--channels", "8", "--seconds", "1", "--out", tmp_path / "full")
    assert r.returncode == 2
    _clean(r, "not empty")


def test_record_plans_for_the_real_channel_count_and_refuses_a_small_disk(tmp_path):
    from cortexlink.cli.record import check_space

    # 64 channels x 30 kHz x 4 s of int16 is ~15 MB: a disk with 2 MB free is refused, naming both figures
    with pytest.raises(InsufficientDiskSpace, match=r"64 channels at 30000 Hz needs about 1[0-9]\.\d MB; .* 2\.0 MB free"):
        check_space(tmp_path, 64, 4.0, free_bytes=2_000_000)
    assert check_space(tmp_path, 64, 4.0, free_bytes=10**12) > 15_000_000
    assert check_space(tmp_path, 64, 4.0, raw=False, free_bytes=2_000_000) < 2_000_000   # features fit
    with pytest.raises(InsufficientDiskSpace, match="ulimit -f"):
        check_space(tmp_path, 64, 4.0, free_bytes=10**12, file_limit_bytes=2_000_000)


def test_record_under_a_file_size_limit_is_refused_before_it_starts(tmp_path):
    """A real limit (RLIMIT_FSIZE, as `ulimit -f 2048`): refused with what to change, nothing written;
    before, the recorder planned for 0 channels, started, dropped its data and exited 1."""
    out = tmp_path / "s"
    r = _cli("record", "--sim", "--channels", "64", "--seconds", "4", "--out", out, fsize=2 << 20)
    assert r.returncode == 2, r.stderr
    _clean(r, "ulimit -f", "--channels")
    assert not out.exists()
    r = _cli("record", "--sim", "--channels", "4", "--seconds", "1", "--out", out, "--no-raw", fsize=2 << 20)
    assert r.returncode == 0, r.stderr
    assert verify(out)["ok"]


def test_record_with_few_channels_runs(tmp_path):
    r = _cli("record", "--sim", "--channels", "4", "--seconds", "1", "--out", tmp_path / "s", "--status-interval", "0")
    assert r.returncode == 0, r.stderr
    _clean(r, "recorded")


def test_replay_refuses_bad_speed_and_seconds(session, capsys):
    for args, needle in ((["--realtime", "--speed", "0"], "--speed must be a finite number > 0"),
                         (["--speed", "-1"], "--speed must be a finite number > 0"),
                         (["--seconds", "-1"], "--seconds must be a finite number > 0"),
                         (["--seconds", "nan"], "--seconds must be a finite number > 0")):
        assert main(["replay", str(session), *args]) == 2
        assert needle in capsys.readouterr().err


def test_replay_of_a_damaged_decoder_file_is_a_clear_error(session, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(session, copy)
    f = sorted((copy / "decoders").glob("*.npz"))[0]
    good = f.read_bytes()
    f.write_bytes(good[:1000])                               # cut short: was a BadZipFile traceback
    r = _cli("replay", copy)
    assert r.returncode == 2
    _clean(r, f.name, "is damaged (BadZipFile", "sessions verify")
    f.write_bytes(b"garbage" + good[7:])                      # not a zip at all
    r = _cli("replay", copy)
    assert r.returncode == 2
    _clean(r, f.name, "cannot be loaded", "sessions verify")
    f.unlink()
    r = _cli("replay", copy)
    assert r.returncode == 2
    _clean(r, f.name, "is missing")


def test_replay_after_recover_says_where_the_raw_data_end(session, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(session, copy)
    raw = copy / "streams" / "raw.clog"
    os.truncate(raw, raw.stat().st_size // 2 + 7)             # a torn tail, as after a crash
    assert main(["recover", str(copy)]) == 0
    r = _cli("replay", copy)
    _clean(r, "the raw data end at sample", "cannot be replayed", "identical")
    assert r.returncode == 0, r.stdout
    res = json.loads(_cli("replay", copy, "--json").stdout)
    f = res["compare"]["features"]
    assert f["equal"] and f["rows_after_raw_end"] > 0 and f["rows_compared"] + f["rows_after_raw_end"] == f["rows_recorded"]
    assert res["raw_samples"][1] < 6.5 * 30000


def test_serve_refuses_ports_outside_the_tcp_range(capsys, tmp_path):
    for port in ("70000", "-1"):
        assert main(["serve", "--port", port, "--no-browser", "--record-dir", str(tmp_path)]) == 2
        assert "--port must be a TCP port in 0..65535" in capsys.readouterr().err
    assert main(["serve", "--record-dir", "/proc/x", "--no-browser"]) == 2
    assert "system folder /proc" in capsys.readouterr().err


def test_a_session_name_cannot_leave_out(tmp_path):
    f = tmp_path / "esc.yaml"
    f.write_text('name: "../../../escaped/x"\nblocks:\n  - {kind: calibration, task: centre_out, seconds: 1}\n')
    out = tmp_path / "a" / "b" / "runs"
    r = _cli("session", "run", f, "--out", out, "--no-progress")
    assert r.returncode == 2
    _clean(r, "session.name must not contain path separators")
    assert not (tmp_path / "escaped").exists() and not out.exists()
    g = tmp_path / "g.yaml"
    g.write_text('name: "../escaped"\nnodes: {}\n')
    r = _cli("run", g, "--out", out)
    assert r.returncode == 2
    _clean(r, "graph name must not contain path separators")


def test_bench_out_replaces_only_json(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["bench", "faults", "--only", "no-such-case", "--out", str(notes)]) == 2
    assert "not a JSON result file" in capsys.readouterr().err
    assert notes.read_text() == "mine"
