"""NWB export: round trip, validator and inspector, holes, damaged and foreign input, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pynwb
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import BinnedFeatures, ChannelMap, Chunk
from cortexlink.io.nwb import NWBFileError, check_nwb, export_nwb, iter_nwb_chunks, read_nwb_streams
from cortexlink.io.session_log import CorruptSessionError, SessionReader, SessionRecorder, recover

FS = 30000.0
BIN = 600


# ------------------------------------------------------------------------------------ sessions
@pytest.fixture(scope="module")
def sim_session(tmp_path_factory) -> Path:
    """A real closed-loop session of the simulator (calibration, fit, closed loop with clicks)."""
    from cortexlink.runtime.session import load_session, run_session

    path = tmp_path_factory.mktemp("nwb") / "sim"
    cfg = load_session({"name": "nwb-test", "seed": 0, "implant": {"preset": "default", "n_channels": 16},
                        "decoder": {"kind": "kalman"}, "click_decoder": {"enabled": True},
                        "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 4,
                                    "task_params": {"click": True}},
                                   {"kind": "fit"},
                                   {"kind": "closed_loop", "task": "centre_out", "seconds": 2,
                                    "task_params": {"click": True}}]})
    rec = SessionRecorder(path, config=cfg, seeds={"seed": 0}, participant_id="P-7f3a", catalogue=False)
    run_session(cfg, progress=False, recorder=rec)
    rec.close()
    return path


@pytest.fixture(scope="module")
def sim_nwb(sim_session, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("nwbout") / "sim.nwb"
    return out, export_nwb(sim_session, out)


def _synthetic(path: Path, *, n_ch: int = 8, n_chunks: int = 40, skip: tuple[int, ...] = (),
               gain_uv=0.195, dtype=np.int16, units: str | None = None, gap_event: bool = False,
               participant: dict | None = None) -> np.ndarray:
    """A session written chunk by chunk; chunks in ``skip`` are not recorded (holes). Returns all chunks."""
    cm = ChannelMap([f"ch{i:04d}" for i in range(n_ch)], ChannelMap.grid(n_ch).positions_um, gain_uv=gain_uv)
    rec = SessionRecorder(path, channel_map=cm, fs_hz=FS, participant_id="S-01", catalogue=False,
                          config={"name": "synthetic", "institution": "Example Institute",
                                  "participant": participant or {"species": "Macaca mulatta", "sex": "M",
                                                                 "age": "P6Y"}})
    if units is not None:
        rec.declare("raw", kind="array", dtype=dtype, columns=list(cm.channel_ids), units=units)
    rng = np.random.default_rng(1)
    allc = rng.integers(-3000, 3000, (n_chunks, BIN, n_ch)).astype(dtype)
    names = [f"{c}/tx" for c in cm.channel_ids] + [f"{c}/sbp" for c in cm.channel_ids]
    rec.event("block_start", sample=0, name="b0", mode="open", task="webgrid", decoder_file=None)
    for i in range(n_chunks):
        if i in skip:
            continue
        rec.write_raw(Chunk(allc[i], FS, i * BIN, 0, i))
        f = np.concatenate([np.full(n_ch, i % 3, np.float32), np.abs(allc[i]).mean(0).astype(np.float32)])
        rec.write_features(BinnedFeatures(f[None], [i * BIN], BIN, FS, names))
        rec.write_row("cursor", (i + 1) * BIN, (0.01 * i, -0.01 * i, 0.5, -0.5, float(i == 5)),
                      columns=("x", "y", "vx", "vy", "clicked"))
        if i == 2:
            rec.event("task", sample=(i + 1) * BIN, block="b0", t_s=0.06, task_event="target_on",
                      data={"cell": 7, "row": 0, "col": 7, "xy": [0.5, 0.25]})
        if i == 5:
            rec.event("task", sample=(i + 1) * BIN, block="b0", t_s=0.12, task_event="incorrect",
                      data={"cell": 3, "lit_cell": 7, "xy": [0.1, 0.1], "time_since_target_on_s": 0.06})
        if i == 8:
            rec.event("task", sample=(i + 1) * BIN, block="b0", t_s=0.18, task_event="correct",
                      data={"cell": 7, "lit_cell": 7, "xy": [0.5, 0.25], "time_since_target_on_s": 0.12})
    if gap_event:
        rec.event("gap", sample=30 * BIN, n_missing=BIN // 2, stream="features")
    rec.event("block_end", sample=n_chunks * BIN, name="b0", n_bins=n_chunks, metrics={"bps": 1.5, "n_correct": 1})
    rec.close()
    return allc


def _edit_manifest(path: Path, fn) -> None:
    mp = path / "manifest.json"
    m = json.loads(mp.read_text())
    fn(m)
    mp.write_text(json.dumps(m))


# ------------------------------------------------------------------------------------ round trip
@pytest.mark.req("SR-50", "SR-60")
def test_sim_session_round_trip(sim_session, sim_nwb):
    out, summary = sim_nwb
    r = SessionReader(sim_session)
    cm = r.channel_map
    assert summary["raw"]["n_holes"] == 0 and summary["n_invalid_times"] == 0
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        es = f.acquisition["ElectricalSeries"]
        _s, raw = r.read_array("raw")
        assert es.data.dtype == np.int16 and es.data.shape == raw.shape
        np.testing.assert_array_equal(es.data[:], raw)                  # bit-exact
        assert es.data.compression == "gzip" and es.data.chunks[0] <= FS
        assert es.timestamps is None and es.rate == FS and es.starting_time == 0.0
        # conversion: counts -> volts gives the channel map's microvolts
        volts = es.data[:100].astype(np.float64) * es.conversion + es.offset
        np.testing.assert_allclose(volts * 1e6, cm.to_uv(raw[:100]), rtol=1e-6, atol=1e-3)
        # electrodes: geometry, ids, bad column
        el = f.electrodes
        assert list(el["channel_id"][:]) == list(cm.channel_ids)
        np.testing.assert_array_equal(np.c_[el["rel_x"][:], el["rel_y"][:]], cm.positions_um)
        assert list(el["bad"][:]) == list(cm.bad)
        assert f.devices["cortexlink simulated implant"] is not None
        assert "probeinterface_probe" in f.scratch
        # features as bins with bin-start times
        fs_, feat = r.read_array("features")
        ntx = len(cm.channel_ids)
        tx = f.processing["ecephys"]["ThresholdCrossings"]
        np.testing.assert_array_equal(tx.data[:], feat[:, :ntx])
        np.testing.assert_array_equal(f.processing["ecephys"]["SpikeBandPower"].data[:], feat[:, ntx:])
        assert tx.starting_time == fs_[0] / FS and tx.rate == FS / BIN
        # behaviour
        cs, cur = r.read_array("cursor")
        pos = f.processing["behavior"]["CursorPosition"]["cursor_xy"]
        np.testing.assert_array_equal(pos.data[:], cur[:, :2])
        ds, dec = r.read_array("decoder")
        np.testing.assert_array_equal(f.processing["behavior"]["decoded_velocity"].data[:], dec[:, :2])
        assert "SIMULATED" in f.processing["behavior"]["intended_velocity_simulated"].description
        assert len(f.events["clicks"]) == int(cur[:, 4].sum()) > 0
        # trials from task events: one per target_on, with target position and outcome
        n_on = sum(1 for e in r.events("task") if e["task_event"] == "target_on")
        trials = f.trials.to_dataframe()
        assert len(trials) == n_on
        sel = [e for e in r.events("task") if e["task_event"] == "select"]
        assert (trials["outcome"] == "select").sum() == len(sel)
        first_on = next(e for e in r.events("task") if e["task_event"] == "target_on")
        assert trials["start_time"].iloc[0] == first_on["sample"] / FS
        assert trials["target_x"].iloc[0] == first_on["data"]["xy"][0]
        assert set(f.epochs.to_dataframe()["block"]) == {"00-calibration", "02-closed_loop"}
        # de-identified subject
        subj = f.subject
        assert subj.subject_id == "P-7f3a" and subj.date_of_birth is None
        assert subj.species == "Homo sapiens" and subj.sex == "U" and subj.age == "P0D/"
        assert f.identifier == r.manifest["session_id"] == f.session_id
        assert f.session_start_time.tzinfo is not None
        man = json.loads(f.scratch["cortexlink_manifest"].data)
        assert "host" not in man["provenance"] and "pid" not in man["provenance"]
        assert r.manifest["provenance"]["cortexlink_version"] in f.session_description


@pytest.mark.req("SR-50")
def test_read_back_for_replay(sim_session, sim_nwb):
    out, _ = sim_nwb
    r = SessionReader(sim_session)
    got = read_nwb_streams(out)
    assert got["fs_hz"] == FS and got["channel_map"] == r.channel_map
    s, d, names, bw = got["features"]
    s0, d0 = r.read_array("features")
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(d, d0)
    assert names == tuple(r.columns("features")) and bw == BIN
    for k in ("cursor", "decoder", "intent"):
        s0, d0 = r.read_array(k)
        s1, d1, cols = got[k]
        np.testing.assert_array_equal(s1, s0)
        np.testing.assert_array_equal(d1, d0)
        assert cols == r.columns(k)
    assert got["events"] == r.events()
    chunks = list(iter_nwb_chunks(out, 600))
    orig = list(r.iter_chunks())
    assert [c.start_sample for c in chunks] == [c.start_sample for c in orig]
    np.testing.assert_array_equal(chunks[7].data, orig[7].data)
    assert chunks[0].fs_hz == FS and chunks[0].data.dtype == np.int16


@pytest.mark.req("SR-50")
def test_validator_clean_and_no_critical_inspector_findings(sim_nwb):
    out, _ = sim_nwb
    found = check_nwb(out)
    assert found["validator"] == []
    crit = [m for m in found["inspector"] if m["importance"] == "CRITICAL"]
    assert crit == [], crit
    # only metadata a de-identified export cannot know are left as suggestions
    assert {m["check"] for m in found["inspector"]} <= {"check_experimenter_exists", "check_institution"}


# ------------------------------------------------------------------------------------ holes and gaps
@pytest.mark.req("SR-50")
def test_hole_is_zero_filled_listed_in_invalid_times_and_skipped_on_replay(tmp_path):
    allc = _synthetic(tmp_path / "s", skip=(10, 11, 25), gap_event=True)
    out = tmp_path / "s.nwb"
    summary = export_nwb(tmp_path / "s", out, compression="lzf")
    assert summary["raw"]["n_holes"] == 2 and summary["raw"]["missing_samples"] == 3 * BIN
    got = read_nwb_streams(out)
    inv = got["invalid_times"]
    assert (10 * BIN, 12 * BIN) == inv[0][:2] and "raw" in inv[0][2]
    assert (25 * BIN, 26 * BIN) == inv[1][:2]
    assert inv[2][:2] == (30 * BIN, 30 * BIN + BIN // 2) and "gap" in inv[2][2]
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        data = f.acquisition["ElectricalSeries"].data
        assert data.shape[0] == 40 * BIN
        assert not data[10 * BIN:12 * BIN].any()
        np.testing.assert_array_equal(data[12 * BIN:13 * BIN], allc[12])
        t = f.invalid_times.to_dataframe()
        assert t["start_time"].iloc[0] == 10 * BIN / FS
        assert f.subject.species == "Macaca mulatta" and f.subject.sex == "M" and f.subject.age == "P6Y"
        assert f.institution == "Example Institute"
        trials = f.trials.to_dataframe()
        assert list(trials["outcome"]) == ["correct"] and trials["n_incorrect"].iloc[0] == 1
        assert trials["target"].iloc[0] == "7" and trials["stop_time"].iloc[0] == 40 * BIN / FS
    chunks = list(iter_nwb_chunks(out, BIN))
    kept = [i for i in range(40) if i not in (10, 11, 25)]
    assert [c.start_sample for c in chunks] == [i * BIN for i in kept]
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), allc[kept].reshape(-1, 8))
    # the features stream had the same holes: listed once (merged), bins written as recorded
    s, _d, _n, _bw = got["features"]
    assert s.size == 37


def test_no_raw_export_and_overwrite(tmp_path):
    _synthetic(tmp_path / "s")
    out = tmp_path / "s.nwb"
    export_nwb(tmp_path / "s", out, raw=False, compression=None)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        assert "ElectricalSeries" not in f.acquisition
        assert f.processing["ecephys"]["ThresholdCrossings"].data.shape == (40, 8)
    with pytest.raises(ConfigError, match=r"s\.nwb exists; choose a new path"):
        export_nwb(tmp_path / "s", out)
    with pytest.raises(NWBFileError, match=r"s\.nwb: no acquisition/ElectricalSeries \(exported with --no-raw"):
        next(iter_nwb_chunks(out, 10))
    export_nwb(tmp_path / "s", out, overwrite=True)
    assert len(list(iter_nwb_chunks(out, BIN))) == 40
    assert not list(tmp_path.glob("*.part.nwb"))


@pytest.mark.req("SR-50")
def test_per_channel_gain_uses_channel_conversion(tmp_path):
    gains = np.linspace(0.1, 0.8, 8)
    allc = _synthetic(tmp_path / "s", gain_uv=gains)
    out = tmp_path / "s.nwb"
    export_nwb(tmp_path / "s", out, compression=None)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        es = io.read().acquisition["ElectricalSeries"]
        v = es.data[:BIN] * es.channel_conversion[:] * es.conversion + es.offset
        np.testing.assert_allclose(v * 1e6, allc[0] * gains, rtol=1e-6)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.req("SR-41", "SR-52")
def test_damaged_stream_is_refused_naming_the_file_then_exported_after_recover(tmp_path):
    _synthetic(tmp_path / "s")
    p = tmp_path / "s" / "streams" / "raw.clog"
    b = bytearray(p.read_bytes())
    rec_bytes = 36 + BIN * 8 * 2
    b[len(b) - 15 * rec_bytes + 100] ^= 0xFF              # a payload byte of record 25
    p.write_bytes(bytes(b))
    out = tmp_path / "s.nwb"
    with pytest.raises(CorruptSessionError, match=r"does not verify: .*raw\.clog: SHA-256 does not match the manifest"):
        export_nwb(tmp_path / "s", out)
    assert not out.exists() and not list(tmp_path.glob("*.part.nwb"))
    summary = export_nwb(tmp_path / "s", tmp_path / "salvaged.nwb", salvage=True)
    assert summary["raw"]["n_holes"] == 1
    recover(tmp_path / "s", catalogue=False)
    summary = export_nwb(tmp_path / "s", out)
    assert summary["raw"]["missing_samples"] == BIN
    assert read_nwb_streams(out)["invalid_times"][0][:2] == (25 * BIN, 26 * BIN)


@pytest.mark.req("SR-41", "SR-52")
def test_truncated_stream_is_refused(tmp_path):
    _synthetic(tmp_path / "s")
    p = tmp_path / "s" / "streams" / "raw.clog"
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 1000)
    with pytest.raises(CorruptSessionError, match=r"does not verify: .*raw\.clog: size \d+ bytes, the manifest says \d+"):
        export_nwb(tmp_path / "s", tmp_path / "s.nwb")
    _edit_manifest(tmp_path / "s", lambda m: (m.update(state="recording"), m.pop("files")))   # a crashed session
    with pytest.raises(CorruptSessionError, match=r"no checksums \(state 'recording'\); the session was not closed"):
        export_nwb(tmp_path / "s", tmp_path / "s.nwb")


@pytest.mark.req("SR-52")
def test_foreign_input_is_refused(tmp_path):
    with pytest.raises(CorruptSessionError, match="no manifest.json; not a cortexlink session"):
        export_nwb(tmp_path, tmp_path / "x.nwb")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(CorruptSessionError, match=r"file\.txt: not a folder"):
        export_nwb(tmp_path / "file.txt", tmp_path / "x.nwb")
    _synthetic(tmp_path / "s")
    (tmp_path / "s" / "streams" / "cursor.clog").write_bytes(b"PK\x03\x04 a zip file, not a stream")
    with pytest.raises(CorruptSessionError, match=r"does not verify: .*cursor\.clog: size 29 bytes, the manifest says"):
        export_nwb(tmp_path / "s", tmp_path / "x.nwb")
    with pytest.raises(NWBFileError, match=r"file\.txt: not an HDF5 file"):
        read_nwb_streams(tmp_path / "file.txt")
    import h5py
    with h5py.File(tmp_path / "plain.h5", "w") as h:
        h["x"] = 1
    with pytest.raises(NWBFileError, match=r"plain\.h5: not a readable NWB file"):
        read_nwb_streams(tmp_path / "plain.h5")


@pytest.mark.req("SR-52")
def test_metadata_disagreeing_with_the_data_is_refused(tmp_path):
    _synthetic(tmp_path / "a")

    def drop_channel(m):
        for k in ("channel_ids", "positions_um", "gain_uv", "offset_uv", "bad"):
            m["channel_map"][k] = m["channel_map"][k][:-1]
    _edit_manifest(tmp_path / "a", drop_channel)
    with pytest.raises(ValidationError, match=r"raw\.clog: 8 channel columns, but the manifest's channel map .* 7"):
        export_nwb(tmp_path / "a", tmp_path / "a.nwb")

    _synthetic(tmp_path / "b")
    _edit_manifest(tmp_path / "b", lambda m: m.update(fs_hz=20000.0))
    with pytest.raises(ValidationError, match=r"rate_hz 30000 Hz disagrees with the manifest's fs_hz 20000 Hz"):
        export_nwb(tmp_path / "b", tmp_path / "b.nwb")

    _synthetic(tmp_path / "c", units="uV")                   # int16 counts labelled as microvolts
    with pytest.raises(ValidationError, match=r"raw\.clog: integer samples \(int16\) must be in 'counts'"):
        export_nwb(tmp_path / "c", tmp_path / "c.nwb")

    _synthetic(tmp_path / "d")
    _edit_manifest(tmp_path / "d", lambda m: m["channel_map"]["channel_ids"].__setitem__(3, "chXXXX"))
    with pytest.raises(ValidationError, match=r"column 3 is channel 'ch0003' but .* has 'chXXXX'"):
        export_nwb(tmp_path / "d", tmp_path / "d.nwb")

    _synthetic(tmp_path / "e", participant={"age": "45 years"})   # not a de-identified ISO 8601 age
    with pytest.raises(ValidationError, match=r"subject age must be an ISO 8601 duration .* got '45 years'"):
        export_nwb(tmp_path / "e", tmp_path / "e.nwb")
    assert not list(tmp_path.glob("*.nwb"))


def test_cli_export(tmp_path, capsys):
    from cortexlink.cli.main import main

    _synthetic(tmp_path / "s", skip=(3,))
    assert main(["export", str(tmp_path / "s"), "--to", str(tmp_path / "s.nwb"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raw"]["n_holes"] == 1 and out["bytes"] == (tmp_path / "s.nwb").stat().st_size
    assert main(["export", str(tmp_path / "s"), "--to", str(tmp_path / "s.nwb")]) == 2
    assert "exists; choose a new path (or pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "s"), "--to", str(tmp_path / "s.nwb"), "--overwrite", "--no-raw"]) == 0
    assert "ElectricalSeries" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------ memory
def test_export_memory_stays_far_below_the_raw_size(tmp_path):
    """20 s x 256 channels (307 MB of raw) exported in a fresh process: peak RSS growth is measured
    with VmHWM reset after the imports, so it is the export's own."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    n_ch, n_sec = 256, 20
    cm = ChannelMap.grid(n_ch)
    rec = SessionRecorder(tmp_path / "big", channel_map=cm, fs_hz=FS, catalogue=False, on_full="block",
                          block_timeout_s=60.0)
    block = np.random.default_rng(0).integers(-2000, 2000, (BIN * 50, n_ch)).astype(np.int16)
    for k in range(n_sec * 50):
        rec.write_raw(Chunk(block[(k % 50) * BIN:(k % 50 + 1) * BIN], FS, k * BIN, 0, k))
    rec.close()
    raw_mb = (tmp_path / "big" / "streams" / "raw.clog").stat().st_size / 1e6
    code = textwrap.dedent(f"""
        import json, pynwb, h5py
        from cortexlink.io import nwb
        # warm-up without raw (pynwb loads its namespaces and type maps once per process)
        nwb.export_nwb({str(tmp_path / 'big')!r}, {str(tmp_path / 'warm.nwb')!r}, raw=False)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                        # reset VmHWM: measure the raw export alone
        before = nwb._peak_rss_mb()
        s = nwb.export_nwb({str(tmp_path / 'big')!r}, {str(tmp_path / 'big.nwb')!r}, compression="lzf")
        print(json.dumps({{"before": before, "peak": nwb._peak_rss_mb(), "n": s["raw"]["n_samples"]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["n"] == n_sec * int(FS)
    growth = res["peak"] - res["before"]
    # measured ~50 MB (about 3x the 15 MB one-second buffer), whatever the length; the raw is 307 MB
    assert growth < 0.25 * raw_mb, (growth, raw_mb)
