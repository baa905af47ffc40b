"""A session log whose raw stream is stored compressed (``raw_codec``): transparent reading, crash
safety (torn tails, SIGKILL), damage found and salvaged, old files unchanged, bad options refused."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.io.session_log import (
    REC_HEADER_BYTES, CorruptSessionError, SessionReader, SessionRecorder, inspect_header, read_manifest, recover,
    scan_stream, verify_session,
)

FS = 30000.0


def _signal(n: int, n_ch: int, seed: int = 0) -> np.ndarray:
    """Correlated int16 samples (a random walk plus noise), as broadband data compresses."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 20, (n, n_ch)), axis=0)
    return np.clip(walk + rng.normal(0, 5, (n, n_ch)), -32768, 32767).astype(np.int16)


def _record(path: Path, x: np.ndarray, sizes: list[int], codec: str = "rice", resync: int = 4) -> list[Chunk]:
    rec = SessionRecorder(path, channel_map=ChannelMap.grid(x.shape[1]), fs_hz=FS, catalogue=False,
                          participant_id="P-1", raw_codec=codec, raw_codec_resync_records=resync)
    chunks, pos, i = [], 0, 0
    while pos < x.shape[0]:
        n = sizes[i % len(sizes)]
        c = Chunk(x[pos:pos + n], FS, pos, 1000 + i, i)
        rec.write_raw(c)
        chunks.append(c)
        pos += n
        i += 1
    rec.event("block_start", sample=0, name="b1")
    rec.close(timeout_s=600)          # the first use JIT-compiles the coder: slow on a loaded machine
    return chunks


def _offsets(p: Path) -> list[tuple[int, int]]:
    """(offset, record length) of every record of a stream file."""
    return [(r.offset, REC_HEADER_BYTES + r.payload_bytes) for k, r in scan_stream(p) if k == "record"]


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("codec", ["rice", "range", "lms", "lms-fast"])
@pytest.mark.parametrize("sizes", [[1], [7], [30, 1, 300]])
def test_a_compressed_raw_stream_reads_back_identical_samples_and_chunks(tmp_path, codec, sizes):
    x = _signal(600, 5)
    chunks = _record(tmp_path / "s", x, sizes, codec)
    r = SessionReader(tmp_path / "s")
    samples, data = r.read_array("raw")
    np.testing.assert_array_equal(data, x)
    np.testing.assert_array_equal(samples, np.arange(600))
    got = list(r.iter_chunks())
    assert [(c.start_sample, c.seq, c.host_time_ns, c.n_samples) for c in got] == \
        [(c.start_sample, c.seq, c.host_time_ns, c.n_samples) for c in chunks]
    assert all(g.data.dtype == np.int16 and np.array_equal(g.data, c.data) for g, c in zip(got, chunks))
    for lo, hi in ((100, 250), (0, 1), (599, None), (None, 31), (333, 334), (250, 250)):
        s_, d_ = r.read_array("raw", lo, hi)                  # decodes only what it returns and its chain
        np.testing.assert_array_equal(d_, x[lo:hi])
        np.testing.assert_array_equal(s_, np.arange(600)[lo:hi])
    recs = list(r.records("raw", want=lambda s, n: s >= 300))
    wanted = [rc for rc in recs if rc.sample >= 300]
    assert all(rc.data.strides == (0, 0) and not rc.data.any() for rc in recs if rc.sample < 300)   # not decoded
    np.testing.assert_array_equal(np.concatenate([rc.data for rc in wanted]), x[wanted[0].sample:])
    h = inspect_header(tmp_path / "s" / "streams" / "raw.clog")
    assert h.version == 3 and h.info["codec"] == {"name": "cortexlink", "entropy": codec, "resync_records": 4}
    assert inspect_header(tmp_path / "s" / "streams" / "events.clog").version == 2
    assert verify_session(tmp_path / "s")["ok"]
    m = read_manifest(tmp_path / "s")
    assert m["writer"]["raw_codec"] == codec and m["streams"]["raw"]["rows"] == 600


def test_compression_shrinks_the_raw_stream_and_the_default_writes_the_old_format(tmp_path):
    x = _signal(3000, 16)
    _record(tmp_path / "c", x, [30], "rice")
    _record(tmp_path / "u", x, [30], "none")
    pc, pu = (tmp_path / d / "streams" / "raw.clog" for d in "cu")
    assert pc.stat().st_size < 0.7 * pu.stat().st_size
    h = inspect_header(pu)
    assert h.version == 2 and "codec" not in h.info            # an uncompressed file is as before
    rec = SessionRecorder(tmp_path / "d", channel_map=ChannelMap.grid(16), fs_hz=FS, catalogue=False,
                          raw_codec="rice")
    for i in range(0, 3000, 30):
        rec.write_raw(Chunk(x[i:i + 30], FS, i, 0, i))
    rec.close(timeout_s=600)          # the first use JIT-compiles the coder: slow on a loaded machine
    pd = tmp_path / "d" / "streams" / "raw.clog"
    assert rec.stats()["streams"]["raw"]["bytes"] == pd.stat().st_size - _offsets(pd)[0][0]   # bytes written
    np.testing.assert_array_equal(SessionReader(tmp_path / "u").read_array("raw")[1], x)


@pytest.mark.req("SR-40")
@pytest.mark.parametrize("cut", ["header", "payload", "last_byte"])
@pytest.mark.parametrize("codec", ["range", "lms-fast"])
def test_recover_after_a_torn_compressed_record_keeps_every_intact_record(tmp_path, cut, codec):
    x = _signal(30 * 11, 6)
    _record(tmp_path / "s", x, [30], codec, resync=4)
    p = tmp_path / "s" / "streams" / "raw.clog"
    offs = _offsets(p)
    off, n = offs[-1]
    keep = {"header": off + 10, "payload": off + REC_HEADER_BYTES + (n - REC_HEADER_BYTES) // 2,
            "last_byte": off + n - 1}[cut]
    with open(p, "r+b") as f:
        f.truncate(keep)
    with pytest.raises(CorruptSessionError, match=r"raw\.clog.*torn record"):
        SessionReader(tmp_path / "s").read_array("raw")
    rep = recover(tmp_path / "s")
    assert rep["streams"]["raw"]["records"] == 10 and rep["streams"]["raw"]["damaged_regions"] == 1
    np.testing.assert_array_equal(SessionReader(tmp_path / "s").read_array("raw")[1], x[:300])
    assert verify_session(tmp_path / "s")["ok"]


@pytest.mark.req("SR-41", "SR-42")
def test_a_corrupted_compressed_record_is_found_and_salvaged_from_the_next_resync_point(tmp_path):
    x = _signal(30 * 12, 6)
    _record(tmp_path / "s", x, [30], "rice", resync=4)          # resync points: records 0, 4, 8
    p = tmp_path / "s" / "streams" / "raw.clog"
    offs = _offsets(p)
    off, n = offs[5]
    b = bytearray(p.read_bytes())
    b[off + n - 3] ^= 0x10                                       # a payload byte of record 5
    p.write_bytes(bytes(b))
    v = verify_session(tmp_path / "s")
    assert not v["ok"] and any(f"damaged at byte {off} (checksum mismatch; and 2 intact record(s)" in q
                               for q in v["problems"])
    with pytest.raises(CorruptSessionError, match=f"damaged at byte {off}: checksum mismatch"):
        SessionReader(tmp_path / "s").read_array("raw")
    damage = [d for k, d in scan_stream(p, salvage=True) if k == "damage"]
    assert damage == [{"offset": off, "length": offs[8][0] - off, "dependent_records": 2,
                       "reason": damage[0]["reason"]}]                       # records 5, 6 and 7: one region
    s, data = SessionReader(tmp_path / "s", salvage=True).read_array("raw")
    keep = np.r_[0:150, 240:360]
    np.testing.assert_array_equal(s, keep)
    np.testing.assert_array_equal(data, x[keep])
    rep = recover(tmp_path / "s")
    assert rep["streams"]["raw"]["records"] == 9 and rep["streams"]["raw"]["damaged_regions"] == 1
    assert (tmp_path / "s" / "corrupt" / f"raw.{off}.bin").stat().st_size == offs[8][0] - off
    np.testing.assert_array_equal(SessionReader(tmp_path / "s").read_array("raw")[1], x[keep])
    assert verify_session(tmp_path / "s")["ok"]


@pytest.mark.req("SR-41", "SR-42")
def test_a_record_that_lost_its_predecessor_is_not_decoded_from_a_wrong_state(tmp_path):
    """Cut a whole intact record out of the middle: the next one is intact (its CRC holds) but its
    state is gone; it must be reported, never decoded from the wrong predecessor."""
    x = _signal(30 * 8, 3)
    _record(tmp_path / "s", x, [30], "rice", resync=8)
    p = tmp_path / "s" / "streams" / "raw.clog"
    offs = _offsets(p)
    b = p.read_bytes()
    p.write_bytes(b[:offs[2][0]] + b[offs[3][0]:])
    with pytest.raises(CorruptSessionError, match="depends on a damaged or missing record"):
        SessionReader(tmp_path / "s").read_array("raw")
    v = verify_session(tmp_path / "s")                  # checks the frames' chain without decoding them
    assert any(f"damaged at byte {offs[2][0]} (payload does not decode (depends on a damaged or missing record" in q
               for q in v["problems"]), v["problems"]
    skim = [k for k, _ in scan_stream(p, salvage=True, decode=False)]
    assert skim == [k for k, _ in scan_stream(p, salvage=True)] == ["record"] * 2 + ["damage"]
    s, data = SessionReader(tmp_path / "s", salvage=True).read_array("raw")
    np.testing.assert_array_equal(data, x[:60])


def test_a_damaged_compressed_header_is_rebuilt_from_the_manifest(tmp_path):
    x = _signal(300, 4)
    _record(tmp_path / "s", x, [30], "range")
    p = tmp_path / "s" / "streams" / "raw.clog"
    with open(p, "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    rep = recover(tmp_path / "s")
    assert rep["streams"]["raw"]["header"].startswith("rebuilt from the manifest")
    assert inspect_header(p).version == 3
    np.testing.assert_array_equal(SessionReader(tmp_path / "s").read_array("raw")[1], x)


_CRASH = textwrap.dedent("""
    import sys, numpy as np
    from cortexlink.core.types import ChannelMap, Chunk
    from cortexlink.io.session_log import SessionRecorder
    rec = SessionRecorder(sys.argv[1], channel_map=ChannelMap.grid(8), fs_hz=30000.0, catalogue=False,
                          raw_codec="rice", raw_codec_resync_records=5, fsync_interval_s=0.01)
    rng = np.random.default_rng(1)
    said = False
    for i in range(10 ** 9):
        rec.write_raw(Chunk(np.cumsum(rng.integers(-50, 50, (30, 8)), axis=0).astype(np.int16), 30000.0,
                            30 * i, 0, i))
        if i >= 200 and not said and rec.stats()["streams"]["raw"]["records"] >= 100:
            said = print("written", flush=True) or True
""")


@pytest.mark.req("SR-40", "SR-42")
def test_a_compressed_recording_killed_mid_write_is_recovered(tmp_path):
    s = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH, str(s)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()                                          # SIGKILL while the writer writes
        proc.communicate(timeout=30)
    rep = recover(s)
    n = rep["streams"]["raw"]["records"]
    assert n >= 1 and rep["streams"]["raw"]["damaged_regions"] <= 1      # at most a torn tail
    samples, data = SessionReader(s).read_array("raw")
    np.testing.assert_array_equal(samples, np.arange(30 * n))
    rng = np.random.default_rng(1)
    want = np.concatenate([np.cumsum(rng.integers(-50, 50, (30, 8)), axis=0).astype(np.int16) for _ in range(n)])
    np.testing.assert_array_equal(data, want)
    assert verify_session(s)["ok"]


def test_bad_codec_options_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"raw_codec must be one of none, rice, range, lms, lms-fast; got 'zip'"):
        SessionRecorder(tmp_path / "a", catalogue=False, raw_codec="zip")
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="raw_codec_resync_records must be a whole number"):
            SessionRecorder(tmp_path / "b", catalogue=False, raw_codec="rice", raw_codec_resync_records=bad)
    rec = SessionRecorder(tmp_path / "c", channel_map=ChannelMap.grid(2), fs_hz=FS, catalogue=False,
                          raw_codec="rice")
    with pytest.raises(ValidationError, match=r"raw_codec='rice' stores int16 samples; the raw chunks are float32"):
        rec.write_raw(Chunk(np.zeros((4, 2), np.float32), FS, 0, 0, 0))
    rec.close(timeout_s=600)          # the first use JIT-compiles the coder: slow on a loaded machine


@pytest.mark.req("SR-41")
def test_a_codec_header_with_a_bad_field_is_named(tmp_path):
    x = _signal(60, 2)
    _record(tmp_path / "s", x, [30], "rice")
    p = tmp_path / "s" / "streams" / "raw.clog"
    b = p.read_bytes()
    h = inspect_header(p)
    body = b[10:h.first_offset - 4].replace(b'"entropy": "rice"', b'"entropy": "lzma"')
    import zlib
    head = b[:4] + struct.pack("<HI", 3, len(body)) + body
    q = tmp_path / "bad.clog"
    q.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + b[h.first_offset:])
    assert "'codec.entropy' must be 'rice', 'range' or 'lms'" in inspect_header(q).problem
    shutil.rmtree(tmp_path / "s")


# ------------------------------------------------------------------ where raw is recorded
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def compressed_record(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    r = _cli("record", "--sim", "--channels", "16", "--seconds", "6.5", "--seed", "3", "--out", d / "s",
             "--catalogue", "none", "--raw-codec", "rice", "--json")
    assert r.returncode == 0, r.stderr
    return d / "s"


def test_cortexlink_record_raw_codec_replays_as_the_live_session(compressed_record):
    from cortexlink.io.replay import replay

    rdr = SessionReader(compressed_record)
    assert rdr.stream_info("raw")["codec"]["entropy"] == "rice"
    s, raw = rdr.read_array("raw")
    np.testing.assert_array_equal(s, np.arange(s.size))
    assert s.size >= 6.5 * 30000 and verify_session(compressed_record)["ok"]
    r = replay(compressed_record)
    assert r["compare"]["features"]["equal"], r["compare"]["features"]
    assert r["compare"]["decoder"]["equal"] and r["compare"]["decoder"]["rows_compared"] > 100


def test_nwb_export_of_a_compressed_log_holds_the_same_samples(compressed_record, tmp_path):
    from cortexlink.io.nwb import export_nwb, iter_nwb_chunks

    export_nwb(compressed_record, tmp_path / "s.nwb")
    got = np.concatenate([c.data for c in iter_nwb_chunks(tmp_path / "s.nwb", 600)])
    np.testing.assert_array_equal(got, SessionReader(compressed_record).read_array("raw")[1])


def test_the_recorder_node_takes_raw_codec(tmp_path):
    from cortexlink.runtime.runner import GraphRunner
    from cortexlink.runtime.session import load_session, session_to_graph

    cfg = load_session({"name": "codec", "seed": 0, "implant": {"preset": "default", "n_channels": 8},
                        "decoder": {"kind": "kalman"},
                        "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 0.5}]})
    g = session_to_graph(cfg, recorder={"raw_codec": "range", "raw_codec_resync_records": 16})
    GraphRunner(g, out_dir=tmp_path).run()
    rdr = SessionReader(tmp_path / "recorder")
    assert rdr.stream_info("raw")["codec"] == {"name": "cortexlink", "entropy": "range", "resync_records": 16}
    s, raw = rdr.read_array("raw")
    assert s.size >= 15000 and raw.dtype == np.int16 and verify_session(tmp_path / "recorder")["ok"]
    bad = session_to_graph(cfg, recorder={"raw_codec": "gzip"})
    with pytest.raises(ConfigError, match="raw_codec"):
        GraphRunner(bad, out_dir=tmp_path / "bad").run()


def test_bench_record_measures_the_codec_peers(tmp_path):
    from cortexlink.bench.record import run_one

    plain = run_one("cortexlink", 8, 0.1, tmp_path)
    rice = run_one("cortexlink-rice", 8, 0.1, tmp_path)
    assert plain["samples_recorded"] == rice["samples_recorded"] == 3000
    assert 0.9 < plain["ratio"] < 1.0 < rice["ratio"] and rice["bytes_on_disk"] < plain["bytes_on_disk"]
    with pytest.raises(ValueError, match="peer must be one of cortexlink, cortexlink-rice"):
        run_one("gzip", 8, 0.1, tmp_path)


def test_session_run_record_raw_rice(tmp_path):
    import yaml

    from cortexlink.cli.main import main

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "codec", "seed": 0, "implant": {"preset": "default", "n_channels": 8},
                                 "decoder": {"kind": "kalman"},
                                 "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 0.5}]}))
    assert main(["session", "run", str(f), "--out", str(tmp_path / "runs"), "--record", "raw-rice",
                 "--no-progress"]) == 0
    (rec,) = (tmp_path / "runs").glob("*/recording")
    r = SessionReader(rec)
    assert r.stream_info("raw")["codec"]["entropy"] == "rice" and r.read_array("raw")[0].size >= 15000
    assert verify_session(rec)["ok"]


# ------------------------------------------------------------------ damage anywhere (hypothesis)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_RESYNC = 4


@pytest.fixture(scope="module")
def pristine_compressed(tmp_path_factory) -> Path:
    s = tmp_path_factory.mktemp("prop") / "s"
    _record(s, _signal(10 * 14, 3, seed=2), [10], "rice", resync=_RESYNC)
    return s


_damage = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=200), st.just(0))), min_size=1, max_size=3)


@pytest.mark.req("SR-40", "SR-41", "SR-42")
@settings(max_examples=int(os.environ.get("CORTEXLINK_PROPERTY_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_damage)
def test_damage_to_a_compressed_stream_loses_only_what_depends_on_it(pristine_compressed, ops):
    """Every record whose bytes, and those of the records it depends on (back to its resync
    point), were not touched is kept, in order, and decodes to its samples; nothing is invented;
    recover and verify agree."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp) / "s"
        shutil.copytree(pristine_compressed, s)
        p = s / "streams" / "raw.clog"
        want = [(r.offset, r.offset + REC_HEADER_BYTES + r.payload_bytes, r.seq, r.data.tobytes())
                for _k, r in scan_stream(p)]
        orig = p.read_bytes()
        touched: set[int] = set()
        for op, where, mask in ops:
            b = bytearray(p.read_bytes())
            if op == "append":
                b += where
            elif op == "truncate":
                cut = int(where * len(b))
                del b[cut:]
                touched |= {k for k, (_o, e, _s, _d) in enumerate(want) if e > cut}
            elif b:
                i = int(where * len(b))
                b[i] ^= mask
                touched |= {k for k, (o, e, _s, _d) in enumerate(want) if o <= i < e}
            p.write_bytes(bytes(b))
        for salvage in (False, True):
            try:
                SessionReader(s, salvage=salvage).read_array("raw")
            except CorruptSessionError:
                pass
        assert verify_session(s)["ok"] is (p.read_bytes() == orig)
        rep = recover(s)
        after = verify_session(s)
        if "moved_aside" in rep["streams"].get("raw", {}):     # no stream file any more, and it held no intact record
            assert touched == set(range(len(want))) and len(after["problems"]) == 1
            assert "raw.clog: missing (moved to corrupt/" in after["problems"][0]
            return
        assert after["ok"], (rep["actions"], after["problems"])
        got = [(r.seq, r.data.tobytes()) for r in SessionReader(s).records("raw")]
        keep = [(sq, d) for k, (_o, _e, sq, d) in enumerate(want)
                if not touched & set(range(k - k % _RESYNC, k + 1))]
        assert [x for x in got if x in set(keep)] == keep, (ops, rep["actions"])     # all of them, in order
        assert set(got) <= {(sq, d) for _o, _e, sq, d in want}                          # nothing invented
