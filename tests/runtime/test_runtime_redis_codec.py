"""Raw chunks compressed on the Redis bus (``chunk_codec``), against a real redis-server on
127.0.0.1: identical samples, fewer bytes, late and lossy readers recover at the next
resynchronisation point with every lost chunk counted."""

import uuid

import numpy as np
import pytest

from cortexlink import Chunk
from cortexlink.core.errors import ConfigError
from cortexlink.runtime.bus import Message
from cortexlink.runtime.chunk_codec import ChunkCodecs
from cortexlink.runtime.graph import load_graph
from cortexlink.runtime.redis_bus import RedisStreamsBus
from cortexlink.runtime.redis_server import connect
from cortexlink.runtime.wire import decode_message, encode_message

FS = 30000.0


def _bus(url, run, **kw):
    return RedisStreamsBus(connect(url, socket_timeout=10.0), run, block_timeout_s=0.2, **kw)


@pytest.fixture
def run_id(redis_server):
    run = "z" + uuid.uuid4().hex[:8]
    yield run
    b = _bus(redis_server.url, run)
    b.delete_run()
    b.close()


def _chunks(n, n_ch=16, n_s=30, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.integers(-40, 41, (n * n_s, n_ch)), axis=0).astype(np.int16)
    return [Chunk(x[k * n_s:(k + 1) * n_s], FS, k * n_s, 1000 + k, k) for k in range(n)]


def _publish(bus, topic, chunks, first_seq=0):
    for i, c in enumerate(chunks):
        bus.publish(Message(topic, first_seq + i, c.start_sample, 5 + i, c))
    bus.sync()


def _read_all(bus, sub, n_expected, tries=500):
    """Pump until every expected chunk arrived or was counted lost (at most tries x 20 ms: a busy
    machine may need many rounds; a complete read stops at once)."""
    got = []
    for _ in range(tries):
        bus.pump(0.02)
        got += sub.drain()
        if len(got) + sub.n_dropped >= n_expected:
            break
    return got


@pytest.mark.parametrize("codec", ["rice", "range", "lms-fast"])
def test_compressed_chunks_arrive_identical_and_smaller(redis_server, run_id, codec):
    pub = _bus(redis_server.url, run_id, chunk_codec=codec, chunk_codec_resync=8)
    rd = _bus(redis_server.url, run_id)                            # a reader needs no option
    try:
        sub = rd.subscribe("src.raw", "dsp.raw", maxlen=1000)
        local = pub.subscribe("src.raw", "rec.raw", maxlen=1000)
        pub.advertise("src.raw", remote=True)
        chunks = _chunks(40)
        _publish(pub, "src.raw", chunks)
        got = _read_all(rd, sub, 40)
        assert [m.seq for m in got] == list(range(40)) and sub.n_dropped == 0
        for m, c in zip(got, chunks):
            p = m.payload
            assert isinstance(p, Chunk) and p.data.dtype == np.int16 and np.array_equal(p.data, c.data)
            assert (p.start_sample, p.host_time_ns, p.seq, p.fs_hz) == (c.start_sample, c.host_time_ns, c.seq, FS)
        assert [m.payload for m in local.drain()] == chunks        # in-process readers: the objects themselves
        st = pub.codecs.stats()
        assert st["n_encoded"] == 40 and st["raw_bytes"] == 40 * 30 * 16 * 2 and st["frame_bytes"] < st["raw_bytes"]
        assert rd.codecs.n_decoded == 40 and rd.codecs.n_lost == 0
        entries = pub._r.xrange(pub.stream_key("src.raw"))
        assert all(f[b"k"] == b"z" for _, f in entries)
        assert sum(len(f[b"x"]) for _, f in entries) == st["frame_bytes"]
    finally:
        pub.close()
        rd.close()


def test_a_late_reader_counts_the_chunks_before_the_next_resync_point_as_a_gap(redis_server, run_id):
    pub = _bus(redis_server.url, run_id, chunk_codec="rice", chunk_codec_resync=8)
    late = _bus(redis_server.url, run_id, start_at_end=True)
    try:
        pub.advertise("src.raw", remote=True)
        chunks = _chunks(40)
        _publish(pub, "src.raw", chunks[:11])                      # frames 0..10; resync points 0, 8, 16, ...
        sub = late.subscribe("src.raw", "dsp.raw", maxlen=1000)
        late.pump(0.0)                                             # joins after chunk 10
        for i, c in enumerate(chunks[11:], start=11):
            pub.publish(Message("src.raw", i, c.start_sample, 5 + i, c))
        pub.sync()
        got = _read_all(late, sub, 29)
        assert [m.seq for m in got] == list(range(16, 40))         # decoded again from resync point 16
        assert all(np.array_equal(m.payload.data, chunks[m.seq].data) for m in got)
        assert sub.n_dropped == 5 and late.codecs.n_lost == 5      # chunks 11..15: counted, not silent
    finally:
        pub.close()
        late.close()


def test_a_trimmed_stream_costs_the_chunks_up_to_the_next_resync_point_all_counted(redis_server, run_id):
    pub = _bus(redis_server.url, run_id, chunk_codec="rice", chunk_codec_resync=32)
    rd = _bus(redis_server.url, run_id)
    try:
        sub = rd.subscribe("src.raw", "dsp.raw", maxlen=100000)
        pub.advertise("src.raw", remote=True, maxlen=10)           # MAXLEN ~ 10: old entries trimmed
        rd.pump(0.0)
        chunks = _chunks(600, n_ch=4, n_s=10)
        _publish(pub, "src.raw", chunks[:3])
        first = _read_all(rd, sub, 3)
        assert [m.seq for m in first] == [0, 1, 2]
        _publish(pub, "src.raw", chunks[3:], first_seq=3)
        got = _read_all(rd, sub, 597)
        seqs = [m.seq for m in got]
        assert seqs and seqs[-1] == 599 and seqs[0] % 32 == 0      # resumes at a resync point
        assert seqs == list(range(seqs[0], 600))                  # and from there on, every chunk
        assert all(np.array_equal(m.payload.data, chunks[m.seq].data) for m in got)
        assert sub.n_dropped == 597 - len(got) > 0                 # everything else counted as lost
    finally:
        pub.close()
        rd.close()


def test_float_chunks_and_other_payloads_go_as_they_are(redis_server, run_id):
    pub = _bus(redis_server.url, run_id, chunk_codec="rice")
    rd = _bus(redis_server.url, run_id)
    try:
        sub = rd.subscribe("src.uv", "dsp.uv", maxlen=100)
        s2 = rd.subscribe("dsp.f", "dec.f", maxlen=100)
        c = Chunk(np.linspace(-1, 1, 60, dtype=np.float32).reshape(30, 2), FS, 0, 0, 0)
        pub.publish(Message("src.uv", 0, 0, 0, c))
        pub.publish(Message("dsp.f", 0, 0, 0, {"x": np.ones(3, np.float32)}))
        pub.sync()
        (m,) = _read_all(rd, sub, 1)
        assert np.array_equal(m.payload.data, c.data) and pub.codecs.n_encoded == 0
        rd.pump(0.0)
        assert s2.drain()[0].payload["x"].tolist() == [1.0, 1.0, 1.0]
    finally:
        pub.close()
        rd.close()


def test_wire_kind_z_round_trip_and_refusals():
    codecs = ChunkCodecs("range", 4)
    c = _chunks(1)[0]
    f = encode_message(Message("a.raw", 3, 0, 1, c, 2), codecs.encode("a.raw", c.data))
    wire = {k: v if isinstance(v, bytes) else str(v).encode() for k, v in f.items()}
    assert wire[b"k"] == b"z"
    back = decode_message("a.raw", wire, ChunkCodecs().decode("a.raw", wire[b"x"]))
    assert np.array_equal(back.payload.data, c.data) and back.seq == 3
    with pytest.raises(ValueError, match="a compressed chunk .kind z. needs its decoded samples"):
        decode_message("a.raw", wire)
    with pytest.raises(ConfigError, match=r"bus.chunk_codec must be one of none, rice, range, lms, lms-fast; got 'lz4'"):
        ChunkCodecs("lz4")
    with pytest.raises(ConfigError, match=r"bus.chunk_codec_resync must be a whole number"):
        ChunkCodecs("rice", 0)
    g = {"nodes": {"a": {"kind": "sim_source", "params": {}}}}
    with pytest.raises(ConfigError, match=r"bus.chunk_codec must be one of"):
        load_graph({**g, "bus": {"kind": "redis", "chunk_codec": "zip"}})
    bad = bytearray(wire[b"x"])
    bad[-1] ^= 1
    d = ChunkCodecs()
    assert d.decode("a.raw", bytes(bad)) is None and d.n_lost == 1            # damaged: lost, counted


def test_a_two_process_graph_sends_its_raw_chunks_compressed(redis_server, tmp_path):
    from cortexlink.runtime.runner import run_graph

    g = {"name": "two-proc-codec", "clock": "realtime", "seconds": 1.5,
         "bus": {"kind": "redis", "chunk_codec": "rice", "chunk_codec_resync": 16},
         "nodes": {
             "src": {"kind": "sim_source", "params": {"config": {"n_channels": 16}, "seed": 5}},
             "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.3}},
                     "inputs": {"raw": {"from": "src.raw", "maxlen": 512}}, "where": "subprocess"},
             "sink": {"kind": "sink", "inputs": {"data": "dsp.features"}},
         }}
    res = run_graph(g, redis_url=redis_server.url, out_dir=tmp_path)
    nodes = res["nodes"]
    st = res["redis"]["chunk_codec"]
    n_chunks = nodes["src"]["n_out"]
    assert st["codec"] == "rice" and st["n_encoded"] == n_chunks == 1500 and st["ratio"] > 1.2   # 1.5 s of 1 ms
    assert nodes["dsp"]["state"] == "stopped" and nodes["dsp"]["n_failures"] == 0
    # how many chunks were still in flight at the stop depends on the machine's load; none is invented
    # or received twice, and each one received was decoded and processed whole
    assert nodes["dsp"]["n_in"] + nodes["dsp"]["n_dropped"] <= n_chunks
    assert nodes["dsp"]["n_in"] > 0 and nodes["dsp"]["summary"]["fx"]["n_samples"] == 30 * nodes["dsp"]["n_in"]


def test_bench_redis_chunks_measures_every_codec_and_checks_every_chunk(redis_executable):
    from cortexlink.bench.redis_roundtrip import run_bus_chunks

    res = run_bus_chunks(("none", "rice"), n_channels=8, n_chunks=20, unix_socket=False)
    none, rice = res["results"]
    assert none["codec"] == "none" and none["bytes_per_chunk"] == 8 * 30 * 2 == res["raw_bytes_per_chunk"]
    assert rice["identical"] and none["identical"] and rice["dropped"] == rice["lost"] == 0
    assert rice["bytes_per_chunk"] < none["bytes_per_chunk"] and rice["round_trip"]["n"] == 20
