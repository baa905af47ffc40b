"""In-process bus: references not copies, the three back-pressure policies, drop counting; codec."""

import threading
import time

import numpy as np
import pytest

from cortexlink import Chunk, ConfigError
from cortexlink.runtime.bus import BackPressureError, InProcessBus, Message
from cortexlink.runtime.wire import decode_message, encode_message


def _msg(seq, payload=None, topic="a.out"):
    return Message(topic, seq, seq * 30, 123, payload)


def test_messages_are_passed_by_reference_to_every_subscriber():
    bus = InProcessBus()
    s1 = bus.subscribe("a.out", "x.in")
    s2 = bus.subscribe("a.out", "y.in")
    other = bus.subscribe("b.out", "z.in")
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    m = _msg(0, arr)
    bus.publish(m)
    got1, got2 = s1.drain(), s2.drain()
    assert got1[0] is m and got2[0] is m and got1[0].payload is arr      # no copy anywhere
    assert m.t_pub_ns > 0 and len(other) == 0 and s1.drain() == []


def test_drop_oldest_keeps_the_newest_and_counts_every_drop():
    bus = InProcessBus()
    sub = bus.subscribe("a.out", "x.in", maxlen=3, policy="drop_oldest")
    for i in range(10):
        bus.publish(_msg(i))
    assert [m.seq for m in sub.drain()] == [7, 8, 9]
    assert sub.n_dropped == 7 and sub.n_received == 10


def test_fail_policy_drops_counts_and_fails_the_consumer():
    bus = InProcessBus()
    sub = bus.subscribe("a.out", "x.in", maxlen=2, policy="fail")
    for i in range(5):
        bus.publish(_msg(i))          # the publisher is never held up
    assert sub.n_dropped == 3
    with pytest.raises(BackPressureError, match=r"a\.out -> x\.in \(policy 'fail', maxlen 2\) overflowed"):
        sub.drain()
    assert [m.seq for m in sub.drain()] == [0, 1]      # the queue itself is intact


def test_block_policy_in_one_thread_cannot_wait_and_says_so():
    bus = InProcessBus()
    sub = bus.subscribe("a.out", "x.in", maxlen=2, policy="block")
    bus.publish(_msg(0))
    bus.publish(_msg(1))
    with pytest.raises(BackPressureError, match="consumer runs in the publisher's thread"):
        bus.publish(_msg(2))
    assert sub.n_dropped == 1 and len(sub) == 2


def test_block_policy_waits_for_a_consumer_thread_and_loses_nothing():
    # generous bounds (a consumer thread starved by a loaded machine must not look like a lost message):
    # the test passes as soon as the 200 messages are through
    bus = InProcessBus(block_timeout_s=60.0)
    sub = bus.subscribe("a.out", "x.in", maxlen=4, policy="block", threaded=True)
    got = []
    stop = threading.Event()

    def consume():
        deadline = time.monotonic() + 120.0
        while not stop.is_set() and time.monotonic() < deadline and len(got) < 200:
            got.extend(sub.drain())
            time.sleep(0.0005)

    t = threading.Thread(target=consume)
    t.start()
    try:
        for i in range(200):
            bus.publish(_msg(i))
    finally:
        t.join(timeout=120.0)
        stop.set()
    got.extend(sub.drain())
    assert [m.seq for m in got] == list(range(200)) and sub.n_dropped == 0


def test_block_policy_times_out_when_nobody_drains():
    bus = InProcessBus(block_timeout_s=0.05)
    sub = bus.subscribe("a.out", "x.in", maxlen=1, policy="block", threaded=True)
    bus.publish(_msg(0))
    with pytest.raises(BackPressureError, match="stayed full for 0.05 s"):
        bus.publish(_msg(1))
    assert sub.n_dropped == 1


def test_bad_edge_settings_are_config_errors():
    bus = InProcessBus()
    with pytest.raises(ConfigError, match="policy of edge a.out -> x.in must be one of"):
        bus.subscribe("a.out", "x.in", policy="lifo")
    with pytest.raises(ConfigError, match="maxlen of edge a.out -> x.in must be an integer >= 1"):
        bus.subscribe("a.out", "x.in", maxlen=0)


@pytest.mark.parametrize("payload", [
    None,
    np.arange(24, dtype=np.float32).reshape(4, 6),
    np.zeros((0, 3), np.int16),
    {"bin": 7, "v": (0.5, float("nan")), "x": np.linspace(0, 1, 5, dtype=np.float32), "name": "a", "ok": True,
     "nested": {"k": [1, 2]}},
])
def test_codec_round_trip_without_pickle(payload):
    m = Message("dsp.features", 5, 600, 99, payload, 100)
    fields = encode_message(m)
    assert all(isinstance(k, bytes) for k in fields)
    wire = {k: (bytes(v) if isinstance(v, memoryview) else str(v).encode() if not isinstance(v, bytes) else v)
            for k, v in fields.items()}
    back = decode_message("dsp.features", wire)
    assert (back.seq, back.sample, back.t_enter_ns, back.t_pub_ns) == (5, 600, 99, 100)
    if payload is None:
        assert back.payload is None
    elif isinstance(payload, np.ndarray):
        assert back.payload.dtype == payload.dtype and np.array_equal(back.payload, payload)
    else:
        assert back.payload["bin"] == 7 and back.payload["name"] == "a" and back.payload["nested"] == {"k": [1, 2]}
        assert back.payload["v"][0] == 0.5 and np.isnan(back.payload["v"][1])
        np.testing.assert_array_equal(back.payload["x"], payload["x"])


def test_codec_round_trips_a_chunk():
    data = np.random.default_rng(0).integers(-500, 500, (30, 8)).astype(np.int16)
    c = Chunk(data, 30000.0, 1234, 777, 9)
    fields = encode_message(Message("src.raw", 1, 1234, 777, c, 800))
    wire = {k: (bytes(v) if isinstance(v, memoryview) else str(v).encode() if not isinstance(v, bytes) else v)
            for k, v in fields.items()}
    back = decode_message("src.raw", wire).payload
    assert isinstance(back, Chunk) and back.start_sample == 1234 and back.seq == 9 and back.fs_hz == 30000.0
    assert np.array_equal(back.data, data) and not back.data.flags.writeable
    with pytest.raises(TypeError, match="cannot send a set payload"):
        encode_message(Message("a.b", 0, 0, 0, {1, 2}))


def test_the_decoder_to_cursor_intent_is_a_typed_message_on_the_wire():
    import math

    from cortexlink.core.errors import ValidationError
    from cortexlink.core.types import Intent

    it = Intent(7, (0.25, -1.5), click=True, proba=0.9, ready=True, features_valid=True, version=2, decode_us=41.5,
                n_jobs=1)
    assert Intent.from_dict(it.to_dict()) == it
    back = decode_message("decoder.intent", encode_message(Message("decoder.intent", 3, 4200, 11, it, 12))).payload
    assert isinstance(back, Intent) and back == it
    nan = decode_message("d.i", encode_message(Message("d.i", 0, 0, 0, Intent(0, (math.nan, math.nan)), 1))).payload
    assert nan.bin == 0 and math.isnan(nan.velocity[0]) and nan.proba is None and math.isnan(nan.decode_us)
    with pytest.raises(ValidationError, match="an Intent needs the keys"):
        Intent.from_dict({"bin": 1, "velocity": (0, 0), "v": 3})
    with pytest.raises(ValidationError, match="an Intent needs the keys"):
        Intent.from_dict({"velocity": (0, 0)})
