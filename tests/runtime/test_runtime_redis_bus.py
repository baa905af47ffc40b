"""Redis Streams bus against a real redis-server on 127.0.0.1 (the ``redis_server`` fixture)."""

import uuid

import numpy as np
import time

import pytest

from cortexlink import Chunk
from cortexlink.runtime.bus import BackPressureError, Message
from cortexlink.runtime.redis_bus import RedisStreamsBus
from cortexlink.runtime.redis_server import connect


@pytest.fixture
def two_buses(redis_server):
    """Two buses of one run, as two processes would hold them."""
    run = "t" + uuid.uuid4().hex[:8]
    a = RedisStreamsBus(connect(redis_server.url, socket_timeout=10.0), run, block_timeout_s=0.2)
    b = RedisStreamsBus(connect(redis_server.url, socket_timeout=10.0), run, block_timeout_s=0.2)
    yield a, b
    a.delete_run()
    a.close()
    b.close()


def _pump_until(bus, sub, n, tries=3000, timeout_s=60.0):
    """Pump until ``n`` messages are queued (bounded in count and time: generous for a loaded
    machine, and returning as soon as they are there)."""
    t_end = time.monotonic() + timeout_s
    for _ in range(tries):
        if len(sub) >= n or time.monotonic() > t_end:
            break
        bus.pump(0.02)
    return sub.drain()


def test_round_trip_of_chunks_arrays_and_dicts(two_buses):
    pub, rd = two_buses
    sub = rd.subscribe("src.raw", "dsp.raw", maxlen=100)
    local = pub.subscribe("src.raw", "rec.raw", maxlen=100)        # same-process reader: by reference
    pub.advertise("src.raw", remote=True)
    data = np.random.default_rng(1).integers(-1000, 1000, (30, 64)).astype(np.int16)
    chunks = [Chunk(data + k, 30000.0, 30 * k, 1000 + k, k) for k in range(5)]
    for k, c in enumerate(chunks):
        pub.publish(Message("src.raw", k, c.start_sample, 5000 + k, c))
    got = _pump_until(rd, sub, 5)
    assert [m.seq for m in got] == list(range(5))
    for m, c in zip(got, chunks):
        assert isinstance(m.payload, Chunk) and np.array_equal(m.payload.data, c.data)
        assert m.payload.start_sample == c.start_sample and m.sample == c.start_sample
        assert m.t_enter_ns == 5000 + m.seq and m.t_recv_ns >= m.t_pub_ns > 0
    assert [m.payload for m in local.drain()] == chunks          # the very same objects locally
    pub.publish(Message("dsp.features", 0, 600, 1, {"bin": 3, "x": np.ones(4, np.float32), "valid": True}))
    s2 = rd.subscribe("dsp.features", "dec.features")
    got = _pump_until(rd, s2, 1)
    assert got[0].payload["bin"] == 3 and got[0].payload["x"].dtype == np.float32
    assert sub.n_dropped == 0


def test_trimmed_stream_shows_up_as_counted_drops(two_buses):
    pub, rd = two_buses
    sub = rd.subscribe("a.out", "b.in", maxlen=10000)
    pub.advertise("a.out", remote=True, maxlen=10)                 # the stream keeps only ~10 (~100) entries
    rd.pump(0.0)                                                   # position the reader at the start
    for i in range(2):
        pub.publish(Message("a.out", i, i, 0, {"i": i}))
    first = _pump_until(rd, sub, 2)
    assert [m.seq for m in first] == [0, 1]
    for i in range(2, 1002):
        pub.publish(Message("a.out", i, i, 0, {"i": i}))
    pub.sync()                                                     # every XADD is in (pipelined writes)
    got = _pump_until(rd, sub, 1)
    for _ in range(5):
        rd.pump(0.0)
        got += sub.drain()
    assert got[-1].seq == 1001
    assert sub.n_dropped == 1000 - len(got) > 0                    # every lost message is counted


def test_block_policy_across_processes_waits_for_the_consumer(two_buses):
    pub, rd = two_buses
    sub = rd.subscribe("a.out", "b.in", maxlen=3, policy="block")
    pub.advertise("a.out", remote=True)
    pub.declare_remote_edge("a.out", "b.in", 3, "block")
    for i in range(3):
        pub.publish(Message("a.out", i, i, 0, None))
    with pytest.raises(BackPressureError, match=r"a\.out -> b\.in \(policy 'block', maxlen 3\) stayed full"):
        pub.publish(Message("a.out", 3, 3, 0, None))
    got = _pump_until(rd, sub, 3)                                  # the consumer drains and acknowledges
    assert [m.seq for m in got] == [0, 1, 2]
    pub.publish(Message("a.out", 3, 3, 0, None))                   # now there is room
    assert [m.seq for m in _pump_until(rd, sub, 1)] == [3]


def test_shared_fault_topic_state_info_and_stop(two_buses):
    a, b = two_buses
    for bus in (a, b):
        bus.advertise_shared("runtime.faults")
    sa = a.subscribe("runtime.faults", "a.collector")
    sb = b.subscribe("runtime.faults", "b.collector")
    a.publish(Message("runtime.faults", 0, 0, 0, {"kind": "x", "from": "a"}))
    b.publish(Message("runtime.faults", 0, 0, 0, {"kind": "y", "from": "b"}))
    got_b = _pump_until(b, sb, 2)
    got_a = _pump_until(a, sa, 2)
    # each process sees its own event locally and the other's through Redis, once
    assert sorted(m.payload["from"] for m in got_a) == ["a", "b"]
    assert sorted(m.payload["from"] for m in got_b) == ["a", "b"]
    a.set_state("dsp", {"state": "running", "n_out": 3})
    a.heartbeat("src", 42)
    a.flush()
    a.sync()                                    # the writes went out without waiting; now they are in
    got = None
    t_end = time.monotonic() + 60.0
    for _ in range(12000):                      # asked on one call, read on a later one (bounded: 60 s)
        got = b.poll_health(0)
        if got is not None or time.monotonic() > t_end:
            break
        time.sleep(0.005)
    _, states, hb = got
    assert states["dsp"]["state"] == "running" and hb["src"] == 42
    a.set_info("dsp/features", {"names": ["ch0000/sbp"]})
    assert b.get_info("dsp/features") == {"names": ["ch0000/sbp"]} and b.get_info("nothing") is None
    assert b.stop_requested() is None
    a.request_stop("done")
    assert b.stop_requested() == "done"
