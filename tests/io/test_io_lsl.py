"""LSL outlet -> inlet round trips over loopback (pylsl / liblsl).

Discovery is kept on this machine with ``use_loopback_only()`` (ResolveScope
machine, multicast interface 127.0.0.1, IPv6 off). Every resolve and pull has a timeout and
every loop a maximum count, so a broken LSL never hangs the suite. Stream names
are unique per test, so concurrent runs on one machine do not see each other's
streams.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET

import numpy as np
import pylsl
import pytest

from cortexlink.core.errors import ConfigError, CortexlinkError, DeviceDisconnected, ValidationError
from cortexlink.core.types import ChannelMap
from cortexlink.io import lsl
from cortexlink.io.lsl import LSLInlet, LSLOutlet, LSLStreamNotFound

#: the bound of every resolve and wait for data: generous (a loaded machine is slow), and never
#: reached on the way to a pass, since each wait returns as soon as its stream or samples arrive
TIMEOUT_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def _loopback_discovery():
    # No effect (and harmless) if LSL was already used in this process: discovery of
    # loopback streams works with liblsl's default config too.
    lsl.use_loopback_only()


def _name() -> str:
    return f"cortexlink-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def streams():
    """Open outlets/inlets through this; inlets are closed before outlets afterwards."""
    opened: list = []

    def track(obj):
        opened.append(obj)
        return obj

    yield track
    for obj in sorted(opened, key=lambda o: isinstance(o, LSLOutlet)):
        obj.close()


def _collect(inlet: LSLInlet, n_samples: int, timeout_s: float = TIMEOUT_S, max_reads: int = 500):
    """Read chunks until n_samples arrived, the timeout passed or max_reads reads."""
    chunks, got = [], 0
    deadline = time.monotonic() + timeout_s
    for _ in range(max_reads):
        if got >= n_samples or time.monotonic() > deadline:
            break
        c = inlet.read_chunk(timeout_s=0.2)
        if c is not None:
            chunks.append(c)
            got += c.n_samples
    return chunks


def _full_xml(name: str) -> ET.Element:
    """The stream's full XML description as an independent LSL client sees it."""
    found = pylsl.resolve_byprop("name", name, 1, TIMEOUT_S)
    assert found, f"pylsl did not resolve {name}"
    inlet = pylsl.StreamInlet(found[0])
    try:
        xml = inlet.info(timeout=TIMEOUT_S).as_xml()
    finally:
        inlet.close_stream()
        del inlet
    return ET.fromstring(xml)


# -- round trips -----------------------------------------------------------------------

def test_round_trip_values_labels_units(streams):
    name = _name()
    labels = ["ch0000", "ch0001", "ch0002", "ch0003"]
    units = ["uV", "uV", "mV", "counts"]
    out = streams(LSLOutlet(name, "EEG", labels, units, 1000.0, channel_types=["ecog"] * 4))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S))
    assert out.wait_for_consumers(TIMEOUT_S)
    assert inl.channel_labels == tuple(labels)
    assert inl.units == tuple(units)
    assert inl.channel_types == ("ecog",) * 4
    assert inl.fs_hz == 1000.0 and inl.n_channels == 4 and inl.dtype == np.float32
    assert inl.name == name and inl.stream_type == "EEG"
    assert inl.channel_map.channel_ids == tuple(labels)

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    t0 = pylsl.local_clock()
    for k in range(5):  # contiguous explicit timestamps: last sample of block k
        out.push(x[10 * k:10 * (k + 1)], t0 + (10 * (k + 1) - 1) / 1000.0)
    chunks = _collect(inl, 50)
    got = np.concatenate([c.data for c in chunks])
    np.testing.assert_array_equal(got, x)
    starts = [c.start_sample for c in chunks]
    assert starts == list(np.cumsum([0] + [c.n_samples for c in chunks[:-1]]))
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(c.fs_hz == 1000.0 and c.host_time_ns > 0 for c in chunks)
    assert all(a.host_time_ns <= b.host_time_ns for a, b in zip(chunks, chunks[1:]))
    assert inl.stats["n_samples"] == 50 and inl.stats["n_gaps"] == 0
    assert inl.stats["n_time_jumps_back"] == 0
    assert out.n_pushed == 50


def test_int16_raw_chunk_round_trip_is_exact(streams):
    name = _name()
    labels = [f"ch{i:04d}" for i in range(1024)]
    # 1 kHz, not 30 kHz: liblsl preallocates 5 s of samples per outlet and inlet
    # (Outlet/InletBufferReserveMs), ~300 MB each for 1024 int16 channels at 30 kHz.
    out = streams(LSLOutlet(name, "ECoG", labels, "counts", 1000.0, dtype="int16"))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S, max_chunk_samples=64))
    assert out.wait_for_consumers(TIMEOUT_S)
    x = np.random.default_rng(1).integers(-32768, 32767, size=(30, 1024), dtype=np.int16)
    out.push(x)
    chunks = _collect(inl, 30)
    got = np.concatenate([c.data for c in chunks])
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, x)


def test_single_sample_push(streams):
    name = _name()
    out = streams(LSLOutlet(name, "Control", ["a", "b"], "au", 50.0))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S))
    assert out.wait_for_consumers(TIMEOUT_S)
    out.push(np.array([1.5, -2.5]))
    (c,) = _collect(inl, 1)
    np.testing.assert_array_equal(c.data, [[1.5, -2.5]])
    assert c.start_sample == 0


def test_resolve_by_type_and_channel_map(streams):
    name, typ = _name(), f"T{uuid.uuid4().hex[:8]}"
    streams(LSLOutlet(name, typ, ["x", "y"], "uV", 100.0))
    cmap = ChannelMap(["e1", "e2"], gain_uv=0.25)
    inl = streams(LSLInlet(stream_type=typ, timeout_s=TIMEOUT_S, channel_map=cmap))
    assert inl.name == name and inl.channel_map is cmap
    with pytest.raises(ConfigError, match="channel_map must have the stream's 2 channels; got 3"):
        LSLInlet(name, timeout_s=TIMEOUT_S, channel_map=ChannelMap(["a", "b", "c"]))


# -- standard streams ------------------------------------------------------------------

def test_features_outlet_description(streams):
    name = _name()
    feats = ["ch0000/tx", "ch0001/tx", "ch0000/sbp", "ch0001/sbp", "ch0000/lfp"]
    out = streams(LSLOutlet.features_outlet(feats, 0.02, name=name))
    assert out.stream_type == lsl.FEATURES_STREAM_TYPE and out.fs_hz == pytest.approx(50.0)
    inl = streams(LSLInlet(name, lsl.FEATURES_STREAM_TYPE, timeout_s=TIMEOUT_S))
    assert inl.channel_labels == tuple(feats)
    assert inl.units == ("counts", "counts", "uV", "uV", "uV^2")
    assert inl.channel_types == ("tx", "tx", "sbp", "sbp", "lfp")
    assert inl.fs_hz == pytest.approx(50.0)
    assert float(inl.metadata["bin_s"]) == 0.02

    # the layout LabRecorder / XDF readers expect, read by plain pylsl
    root = _full_xml(name)
    assert root.findtext("type") == "Features"
    assert root.findtext("channel_count") == "5"
    chans = root.findall("desc/channels/channel")
    assert [c.findtext("label") for c in chans] == feats
    assert [c.findtext("unit") for c in chans] == ["counts", "counts", "uV", "uV", "uV^2"]
    assert [c.findtext("type") for c in chans] == ["tx", "tx", "sbp", "sbp", "lfp"]
    assert root.findtext("desc/acquisition/manufacturer") == "cortexlink"

    assert out.wait_for_consumers(TIMEOUT_S)
    out.push(np.array([[1, 0, 12.5, 9.0, 300.0]], np.float32))
    (c,) = _collect(inl, 1)
    np.testing.assert_array_equal(c.data, [[1, 0, 12.5, 9.0, 300.0]])


def test_intent_outlet_description(streams):
    name = _name()
    out = streams(LSLOutlet.intent_outlet(0.02, name=name))
    assert out.stream_type == lsl.INTENT_STREAM_TYPE
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S))
    assert inl.channel_labels == ("vx", "vy", "click")
    assert inl.units == ("screen/s", "screen/s", "probability")
    assert inl.channel_types == ("velocity", "velocity", "click")
    assert inl.stream_type == "Control" and inl.fs_hz == pytest.approx(50.0)
    chans = _full_xml(name).findall("desc/channels/channel")
    assert [c.findtext("label") for c in chans] == ["vx", "vy", "click"]


def test_features_outlet_rejects_unknown_kinds():
    with pytest.raises(ConfigError, match=r"got kinds \['', 'spikes'\]"):
        LSLOutlet.features_outlet(["ch0000/tx", "ch0000/spikes", "ch0001"], 0.02, name=_name())
    with pytest.raises(ConfigError, match="bin_s"):
        LSLOutlet.features_outlet(["ch0000/tx"], 0.0, name=_name())


# -- errors ----------------------------------------------------------------------------

def test_inlet_not_found_within_timeout():
    name = _name()
    t0 = time.monotonic()
    with pytest.raises(LSLStreamNotFound, match=f"name='{name}'") as ei:
        LSLInlet(name, timeout_s=0.5)
    elapsed = time.monotonic() - t0
    # bounded by its timeout, not waiting for ever (the margin is for a loaded machine, not a latency)
    assert elapsed < 0.5 + TIMEOUT_S, f"resolve was not bounded by its timeout: {elapsed:.2f} s"
    assert isinstance(ei.value, CortexlinkError) and isinstance(ei.value, LookupError)


def test_inlet_argument_errors():
    with pytest.raises(ConfigError, match="name or stream_type"):
        LSLInlet()
    with pytest.raises(ConfigError, match="single quote"):
        LSLInlet("it's", timeout_s=0.1)
    with pytest.raises(ConfigError, match="on_gap"):
        LSLInlet(_name(), timeout_s=0.1, on_gap="ignore")
    with pytest.raises(ConfigError, match="timeout_s"):
        LSLInlet(_name(), timeout_s=0)


def test_irregular_stream_is_refused(streams):
    name = _name()
    streams(LSLOutlet(name, "Markers", ["m"], "", 0.0))
    with pytest.raises(ConfigError, match="regular rate"):
        LSLInlet(name, timeout_s=TIMEOUT_S)


def test_outlet_validation(streams):
    with pytest.raises(ConfigError, match="unique"):
        LSLOutlet(_name(), "EEG", ["a", "a"], "uV", 100.0)
    with pytest.raises(ConfigError, match="units must have 2 entries"):
        LSLOutlet(_name(), "EEG", ["a", "b"], ["uV"], 100.0)
    with pytest.raises(ConfigError, match="dtype"):
        LSLOutlet(_name(), "EEG", ["a"], "uV", 100.0, dtype="complex64")
    with pytest.raises(ConfigError, match="fs_hz"):
        LSLOutlet(_name(), "EEG", ["a"], "uV", -1.0)
    with pytest.raises(ConfigError, match="name"):
        LSLOutlet("", "EEG", ["a"], "uV", 100.0)
    out = streams(LSLOutlet(_name(), "EEG", ["a", "b"], "counts", 100.0, dtype="int16"))
    with pytest.raises(ValidationError, match=r"shape \(2,\) or \(n_samples, 2\)"):
        out.push(np.zeros((4, 3), np.int16))
    with pytest.raises(ValidationError, match="integer"):
        out.push(np.zeros((4, 2), np.float32))
    with pytest.raises(ValidationError, match="fit in int16"):
        out.push(np.full((1, 2), 40000, np.int32))
    with pytest.raises(ValidationError, match=r"timestamp must be a float or have shape \(4,\)"):
        out.push(np.zeros((4, 2), np.int16), timestamp=np.zeros(3))
    out.push(np.zeros((0, 2), np.int16))  # an empty block is a no-op
    assert out.n_pushed == 0
    out.close()
    out.close()  # idempotent
    with pytest.raises(CortexlinkError, match="closed"):
        out.push(np.zeros((1, 2), np.int16))


def test_read_after_close_is_an_error(streams):
    name = _name()
    streams(LSLOutlet(name, "EEG", ["a"], "uV", 100.0))
    inl = LSLInlet(name, timeout_s=TIMEOUT_S)
    inl.close()
    inl.close()
    with pytest.raises(CortexlinkError, match="closed"):
        inl.read_chunk()


# -- gaps ------------------------------------------------------------------------------

def _gappy(out: LSLOutlet, fs: float) -> np.ndarray:
    """Push 10 samples, skip 5, push 10 more (explicit timestamps); return the 20 sent."""
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    t0 = pylsl.local_clock()
    out.push(x[:10], t0 + 9 / fs)
    out.push(x[10:], t0 + (15 + 9) / fs)
    return x


@pytest.mark.parametrize("on_gap", ["count", "advance"])
def test_lost_samples_are_detected_from_timestamps(streams, on_gap):
    name, fs = _name(), 100.0
    out = streams(LSLOutlet(name, "EEG", ["a", "b"], "uV", fs))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S, on_gap=on_gap))
    assert out.wait_for_consumers(TIMEOUT_S)
    x = _gappy(out, fs)
    chunks = _collect(inl, 20)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), x)
    assert inl.stats["n_gaps"] == 1 and inl.stats["n_samples_missing"] == 5
    if on_gap == "count":
        # start_sample counts samples received; the gap is reported where it happened
        assert list(inl.gaps) == [(10, 5)]
        assert chunks[-1].end_sample == 20
    else:
        # chunks are split at the gap and the clock skips the missing samples
        assert list(inl.gaps) == [(15, 5)]
        spans = [(c.start_sample, c.end_sample) for c in chunks]
        assert all(e <= 10 or s >= 15 for s, e in spans)  # no chunk straddles the gap
        before = [sp for sp in spans if sp[1] <= 10]
        after = [sp for sp in spans if sp[0] >= 15]
        assert before[0][0] == 0 and before[-1][1] == 10
        assert after[0][0] == 15 and after[-1][1] == 25
        for a, b in zip(spans, spans[1:]):  # contiguous apart from the one hole
            assert b[0] == a[1] or (a[1], b[0]) == (10, 15)


def test_contiguous_timestamps_give_no_gaps(streams):
    name, fs = _name(), 100.0
    out = streams(LSLOutlet(name, "EEG", ["a"], "uV", fs))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S))
    assert out.wait_for_consumers(TIMEOUT_S)
    t0 = pylsl.local_clock()
    for k in range(20):
        out.push(np.full((5, 1), k, np.float32), t0 + (5 * k + 4) / fs)
    ts, n = [], 0
    deadline = time.monotonic() + TIMEOUT_S
    for _ in range(500):
        if n >= 100 or time.monotonic() > deadline:
            break
        c = inl.read_chunk(timeout_s=0.2)
        if c is not None:
            ts.append(inl.last_timestamps)
            n += c.n_samples
    assert n == 100
    assert inl.stats["n_gaps"] == 0 and inl.stats["n_time_jumps_back"] == 0
    # a block's timestamp is its last sample's; LSL spaces the others at 1/fs
    np.testing.assert_allclose(np.concatenate(ts), t0 + np.arange(100) / fs, rtol=0, atol=1e-6)


def test_gap_detection_can_be_turned_off(streams):
    name, fs = _name(), 100.0
    out = streams(LSLOutlet(name, "EEG", ["a", "b"], "uV", fs))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S, gap_tolerance_s=None))
    assert out.wait_for_consumers(TIMEOUT_S)
    _gappy(out, fs)
    _collect(inl, 20)
    assert inl.stats["n_samples"] == 20 and inl.stats["n_gaps"] == 0


# -- bounded loops ---------------------------------------------------------------------

def test_iter_chunks_is_bounded(streams):
    name = _name()
    out = streams(LSLOutlet(name, "EEG", ["a"], "uV", 100.0))
    inl = streams(LSLInlet(name, timeout_s=TIMEOUT_S))
    with pytest.raises(ConfigError, match="seconds or max_chunks"):
        next(inl.iter_chunks())
    with pytest.raises(ConfigError, match="stall_timeout_s=None"):
        next(inl.iter_chunks(max_chunks=1, stall_timeout_s=None))
    t0 = time.monotonic()
    assert list(inl.iter_chunks(seconds=0.3)) == []  # nothing sent: ends on time
    assert time.monotonic() - t0 < 0.3 + TIMEOUT_S
    with pytest.raises(DeviceDisconnected, match="no sample for 0.3 s"):
        list(inl.iter_chunks(max_chunks=1, stall_timeout_s=0.3))
    assert out.wait_for_consumers(TIMEOUT_S)
    out.push(np.array([7.0], np.float32))  # one sample: LSL may split a block across pulls
    t0 = time.monotonic()
    # ended on the count, not the clock: the clock alone would have taken 4 x TIMEOUT_S
    got = list(inl.iter_chunks(seconds=4 * TIMEOUT_S, max_chunks=1, stall_timeout_s=4 * TIMEOUT_S))
    assert time.monotonic() - t0 < 2 * TIMEOUT_S
    assert len(got) == 1
    np.testing.assert_array_equal(got[0].data, [[7]])


# -- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["function", "env"])
def test_loopback_config_in_a_fresh_process(how):
    """In a fresh process the loopback lsl_api.cfg is accepted and discovery still works."""
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from cortexlink.io import _lsl_common, lsl
        if {how!r} == "function":
            assert lsl.use_loopback_only() is True
            assert lsl.use_loopback_only() is True
        out = lsl.LSLOutlet("loopcheck-{uuid.uuid4().hex[:8]}", "EEG", ["a"], "uV", 100.0)
        inl = lsl.LSLInlet(out.name, timeout_s=30.0)
        assert _lsl_common._state["configured"].startswith("loopback"), _lsl_common._state
        assert lsl.use_loopback_only() is True
        out.wait_for_consumers(30.0)
        out.push(np.ones((3, 1), np.float32))
        n = 0
        for _ in range(300):                        # up to 30 s: returns once the 3 samples came
            c = inl.read_chunk(0.1)
            n += 0 if c is None else c.n_samples
            if n >= 3:
                break
        inl.close(); out.close()
        sys.exit(0 if n == 3 else 3)
    """)
    env = dict(os.environ)
    env.pop("LSLAPICFG", None)
    if how == "env":
        env["CORTEXLINK_LSL_LOOPBACK"] = "1"
    else:
        env.pop("CORTEXLINK_LSL_LOOPBACK", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr
    assert "config" not in res.stderr.lower(), res.stderr  # liblsl complains about bad configs
