"""cortexlink.codec: bit-exact round trips, chunking invariance, CRC, resynchronisation, N1 files."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from _shared_data import need

from cortexlink.codec import Decoder, Encoder, decode_array, encode_array, iter_frames, read_header
from cortexlink.codec.stream import ENTROPY_CODERS, HEADER_SIZE
from cortexlink.core.errors import ConfigError, ValidationError


def _roundtrip(x: np.ndarray, chunk: int, **kw) -> np.ndarray:
    enc, dec = Encoder(x.shape[1], **kw), Decoder()
    parts = [dec.decode(enc.encode(x[i:i + chunk])) for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts)


def _neural_like(n: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 30, (n, c)), axis=0)
    return np.clip(walk + rng.normal(0, 200, (n, c)), -32768, 32767).astype(np.int16)


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("name, x", [
    ("random", np.random.default_rng(1).integers(-32768, 32768, (500, 7)).astype(np.int16)),
    ("constant", np.full((300, 5), -1234, np.int16)),
    ("zeros", np.zeros((100, 3), np.int16)),
    ("full_range", np.array([[-32768, 32767], [32767, -32768]] * 100, np.int16)),
    ("alternating_rails", np.tile(np.array([[-32768], [32767], [32767], [-32768]], np.int16), (50, 3))),
    ("single_sample", np.array([[5, -32768, 32767]], np.int16)),
    ("single_channel", _neural_like(2000, 1)),
    ("neural_like", _neural_like(1000, 16)),
    ("lattice", (np.round(np.random.default_rng(2).integers(-100, 100, (3000, 2)) * 64.1)).astype(np.int16)),
])
@pytest.mark.parametrize("chunk", [1, 30, 4096])
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_round_trip_is_bit_exact(name, x, chunk, entropy):
    y = _roundtrip(x, chunk, entropy=entropy)
    assert y.dtype == np.int16 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(decode_array(encode_array(x, chunk_samples=chunk, entropy=entropy)), x)


@pytest.mark.req("SR-42")
def test_worst_case_residuals_fit_the_range_coders_buffer():
    # a long run of small residuals makes the models sure, then full-scale jumps cost most
    x = np.zeros((6000, 3), np.int16)
    x[3000::2] = 32767
    x[3001::2] = -32768
    x[5000:] = np.random.default_rng(4).integers(-32768, 32768, (1000, 3))
    for chunk in (1, 2000, 6000):
        for entropy in ENTROPY_CODERS:
            np.testing.assert_array_equal(_roundtrip(x, chunk, entropy=entropy), x)


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_round_trip_1024_channels(entropy):
    x = _neural_like(60, 1024, seed=3)
    x[:, 5] = 32767
    x[:, 6] = -32768
    np.testing.assert_array_equal(_roundtrip(x, 30, entropy=entropy), x)


@pytest.mark.req("SR-42")
def test_full_range_ramp_round_trips():
    x = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(-1, 2)
    np.testing.assert_array_equal(_roundtrip(x, 1000), x)
    np.testing.assert_array_equal(_roundtrip(x[::-1].copy(), 777), x[::-1])


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("resync", [1, 3, 1000])
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_chunking_does_not_change_the_samples(resync, entropy):
    x = _neural_like(3000, 4, seed=5)
    ref = _roundtrip(x, 3000, resync_frames=resync, entropy=entropy)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 3000), 40, replace=False))
    enc, dec = Encoder(4, resync_frames=resync, entropy=entropy), Decoder()
    parts = [dec.decode(enc.encode(p)) for p in np.split(x, cuts)]
    np.testing.assert_array_equal(np.concatenate(parts), ref)
    np.testing.assert_array_equal(ref, x)


def test_compresses_neural_like_data():
    x = _neural_like(5000, 8)
    assert len(encode_array(x)) < x.nbytes / 1.3


def test_frame_header_describes_the_frame():
    enc = Encoder(3, resync_frames=2)
    frames = [enc.encode(np.zeros((10, 3), np.int16)) for _ in range(3)]
    heads = [read_header(f) for f in frames]
    assert [h.resync for h in heads] == [True, False, True]
    assert [h.frame_index for h in heads] == [0, 1, 2]
    assert all(h.n_channels == 3 and h.n_samples == 10 and h.frame_size == len(f) for h, f in zip(heads, frames))
    assert [bytes(f) for f in iter_frames(b"".join(frames))] == frames


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_corrupt_frame_is_refused_by_its_crc(entropy):
    x = _neural_like(400, 4)
    enc, dec = Encoder(4, entropy=entropy), Decoder()
    frame = bytearray(enc.encode(x))
    for pos in (HEADER_SIZE + 5, len(frame) - 1, 13):
        bad = bytearray(frame)
        bad[pos] ^= 0x10
        with pytest.raises(ValidationError, match="CRC|declares|truncated|header says"):
            dec.decode(bytes(bad))
    np.testing.assert_array_equal(dec.decode(bytes(frame)), x)


@pytest.mark.req("SR-42")
def test_bad_frames_are_refused():
    dec = Decoder()
    frame = Encoder(2).encode(np.zeros((5, 2), np.int16))
    with pytest.raises(ValidationError, match="magic"):
        dec.decode(b"XXXX" + frame[4:])
    with pytest.raises(ValidationError, match="truncated"):
        dec.decode(frame[:10])
    with pytest.raises(ValidationError, match="header says"):
        dec.decode(frame[:-1])
    with pytest.raises(ValidationError, match="version"):
        dec.decode(frame[:4] + b"\x09" + frame[5:])
    with pytest.raises(ValidationError, match="truncated"):
        decode_array(frame + frame[:-1])
    with pytest.raises(ValidationError, match="no frame"):
        decode_array(b"")


@pytest.mark.req("SR-42")
def test_lost_frame_costs_until_the_next_resync_point():
    x = _neural_like(1000, 3, seed=7)
    enc = Encoder(3, resync_frames=4)
    frames = [enc.encode(x[i:i + 100]) for i in range(0, 1000, 100)]
    dec = Decoder()
    for f in frames[:2]:
        dec.decode(f)
    # frame 2 lost: 3 depends on it and is refused, 4 is a resynchronisation point
    with pytest.raises(ValidationError, match="lost"):
        dec.decode(frames[3])
    assert not dec.synchronised
    for i in range(4, 10):
        np.testing.assert_array_equal(dec.decode(frames[i]), x[i * 100:(i + 1) * 100])


@pytest.mark.req("SR-42")
def test_decoder_joining_mid_stream_waits_for_a_resync_point():
    x = _neural_like(600, 2, seed=8)
    enc = Encoder(2, resync_frames=3)
    frames = [enc.encode(x[i:i + 100]) for i in range(0, 600, 100)]
    dec = Decoder()
    with pytest.raises(ValidationError, match="resynchronisation"):
        dec.decode(frames[1])
    np.testing.assert_array_equal(dec.decode(frames[3]), x[300:400])
    np.testing.assert_array_equal(dec.decode(frames[4]), x[400:500])


@pytest.mark.parametrize("chunk, msg", [
    (np.zeros((5, 3), np.int32), "int16"),
    (np.zeros((5, 3), np.float32), "int16"),
    (np.zeros(5, np.int16), "2-D"),
    (np.zeros((5, 2), np.int16), "channels"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_input_is_refused(chunk, msg):
    with pytest.raises(ValidationError, match=msg):
        Encoder(3).encode(chunk)


@pytest.mark.parametrize("kw", [{"n_channels": 0}, {"n_channels": 70000}, {"n_channels": 2.5},
                                {"n_channels": 2, "resync_frames": 0}, {"n_channels": 2, "value_tables": 1},
                                {"n_channels": 2, "entropy": "huffman"}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ConfigError):
        Encoder(**kw)


def test_empty_chunk_is_a_frame():
    enc, dec = Encoder(2), Decoder()
    assert dec.decode(enc.encode(np.zeros((0, 2), np.int16))).shape == (0, 2)
    x = _neural_like(10, 2)
    np.testing.assert_array_equal(dec.decode(enc.encode(x)), x)


def _read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)


def test_corrupt_payload_with_a_matching_crc_is_refused_not_crashed():
    """Damage the CRC cannot see (the CRC rewritten): the decoder refuses or returns int16, never crashes."""
    import struct
    import zlib

    x = _neural_like(500, 3)
    rng = np.random.default_rng(9)
    for entropy in ENTROPY_CODERS:
        frame = Encoder(3, entropy=entropy).encode(x)
        for _ in range(100):
            bad = bytearray(frame)
            for pos in rng.integers(HEADER_SIZE, len(bad), 3):
                bad[pos] = rng.integers(0, 256)
            bad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad[HEADER_SIZE:]), zlib.crc32(bytes(bad[:20]))))
            try:
                y = Decoder().decode(bytes(bad))
            except ValidationError:
                continue
            assert y.shape == x.shape and y.dtype == np.int16


def test_range_coder_compresses_better_than_rice_and_lms_better_than_both():
    x = _neural_like(20000, 2, seed=11)
    sizes = {e: len(encode_array(x, entropy=e)) for e in ("rice", "range", "lms")}
    assert sizes["lms"] < sizes["range"] < sizes["rice"]


@pytest.mark.parametrize("entropy", ["lms", "lms-fast"])
def test_lms_learns_a_predictable_signal(entropy):
    """An AR(2) process: first differences are correlated, so the LMS filter (and not the fixed
    first-difference predictor) must shrink the residuals well below the range coder's."""
    rng = np.random.default_rng(5)
    e = rng.normal(0, 40, 40000)
    x = np.zeros(40000)
    for t in range(2, 40000):
        x[t] = 1.6 * x[t - 1] - 0.8 * x[t - 2] + e[t]
    x = np.clip(x, -32768, 32767).astype(np.int16)[:, None]
    lms, rng_coded = len(encode_array(x, entropy=entropy)), len(encode_array(x, entropy="range"))
    assert lms < 0.96 * rng_coded
    np.testing.assert_array_equal(decode_array(encode_array(x, entropy=entropy)), x)


@pytest.mark.req("SR-42")
def test_real_n1_files_round_trip(shared_data):
    folder = need(shared_data / "n1_broadband", "N1 WAV files", glob="*.wav")
    files = sorted(folder.glob("*.wav"))
    wav_bytes = packed = 0
    for f in files[:12]:
        x = _read_wav(f)
        buf = encode_array(x, chunk_samples=19531)
        np.testing.assert_array_equal(decode_array(buf)[:, 0], x)
        lms = encode_array(x, chunk_samples=19531, entropy="lms")
        np.testing.assert_array_equal(decode_array(lms)[:, 0], x)
        assert len(lms) < len(buf)
        np.testing.assert_array_equal(_roundtrip(x[:2000, None], 20), x[:2000, None])
        wav_bytes += f.stat().st_size
        packed += len(buf)
    assert wav_bytes / packed > 2.0


@pytest.mark.req("SR-42")
def test_round_trip_property():
    """Any int16 array, any chunking, either coder: the samples come back exactly."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(x=arrays(np.int16, st.tuples(st.integers(1, 300), st.integers(1, 5))),
           chunk=st.integers(1, 310), resync=st.integers(1, 5), entropy=st.sampled_from(ENTROPY_CODERS),
           step=st.sampled_from([1, 3, 64]))
    def check(x, chunk, resync, entropy, step):
        x = (x.astype(np.int64) // step * step).astype(np.int16)   # sparse values exercise the tables
        np.testing.assert_array_equal(_roundtrip(x, chunk, resync_frames=resync, entropy=entropy), x)

    check()


def _lattice(n: int, c: int, seed: int, spread: int = 20) -> np.ndarray:
    """Samples on an ADC ladder (codes x 64.06); any 500 of them use every one of the 41 codes."""
    codes = np.random.default_rng(seed).integers(-spread, spread + 1, (n, c))
    return np.round(codes * 64.06 + 31).astype(np.int16)


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_value_tables_are_carried_between_frames(entropy):
    """The first frame sends each sparse channel's table; later frames send only new values, and
    none when there are none; a resynchronisation point sends them afresh."""
    x = _lattice(4000, 3, seed=6)
    x[3000:, 1] += 7                      # channel 1 takes new values in the last frame
    enc, dec = Encoder(3, resync_frames=3, entropy=entropy), Decoder()
    frames = [enc.encode(x[i:i + 1000]) for i in range(0, 4000, 1000)]
    heads = [read_header(f) for f in frames]
    assert [h.tables for h in heads] == ["carried", "", "", "carried"]
    assert heads[3].resync
    y = np.concatenate([dec.decode(f) for f in frames])
    np.testing.assert_array_equal(y, x)
    # a frame that adds values lists only those, for the channel that has them
    from cortexlink.codec import _tables

    enc2 = Encoder(3, resync_frames=100, entropy=entropy)
    enc2.encode(x[:1000])
    f1 = enc2.encode(x[2000:4000])
    updates, _ = _tables.decode_section(memoryview(f1)[HEADER_SIZE:], 3)
    assert [c for c, _ in updates] == [1]
    np.testing.assert_array_equal(updates[0][1], np.setdiff1d(x[2000:4000, 1], x[:1000, 1]))


def test_table_section_codes_an_adc_ladder_in_about_a_bit_per_value():
    from cortexlink.codec import _tables

    ladder = np.round(np.arange(-400, 400) * 64.06 + 31).astype(np.int32)
    section = _tables.encode_section([(0, ladder)])
    assert len(section) < 800 / 8 * 1.6 + 12
    updates, used = _tables.decode_section(memoryview(section), 1)
    assert used == len(section) and updates[0][0] == 0
    np.testing.assert_array_equal(updates[0][1], ladder)


def test_frames_with_per_frame_tables_still_decode():
    """Frames of the earlier format (each frame its own value tables) decode as before."""
    import struct
    import zlib

    from cortexlink.codec import _kernels, _tables
    from cortexlink.codec.stream import FLAG_RESYNC, FLAG_TABLES, MAGIC, VERSION

    x = _lattice(500, 2, seed=8)
    tabs = [np.unique(x[:, c]).astype(np.int32) for c in range(2)]
    section = bytearray()
    for t in tabs:
        section += _tables._varints([t.size, int(t[0]) + 32768] + np.diff(t).tolist())
    flat, offs = _tables.flatten(tabs)
    state = _kernels.init_state(2)
    out = np.zeros(500 * 2 * _kernels.WORST_BITS // 8 + 16, np.uint8)
    used = _kernels.encode_kernel(x, *state, flat, offs, out)
    payload = bytes(section) + out[:used].tobytes()
    head = struct.pack("<4sBBHIIII", MAGIC, VERSION, FLAG_RESYNC | FLAG_TABLES, 2, 500, 0, len(payload), 0)[:-4]
    frame = head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload
    assert read_header(frame).tables == "frame"
    np.testing.assert_array_equal(Decoder().decode(frame), x)


@pytest.mark.req("SR-42")
def test_a_table_update_that_repeats_known_values_is_refused():
    import struct
    import zlib

    from cortexlink.codec import _tables

    x = _lattice(1000, 1, seed=9)
    enc, dec = Encoder(1, resync_frames=10), Decoder()
    dec.decode(enc.encode(x[:500]))
    good = enc.encode(x[500:])
    h = read_header(good)
    known = np.unique(x[:500, 0])[:2].astype(np.int32)
    section = _tables.encode_section([(0, known)])
    body = bytes(good[HEADER_SIZE:])
    if h.tables == "carried":
        _, skip = _tables.decode_section(memoryview(body), 1)
        body = body[skip:]
    payload = section + body
    head = bytearray(good[:HEADER_SIZE - 4])
    head[5] |= 0x02 | 0x10
    head[16:20] = struct.pack("<I", len(payload))
    bad = bytes(head) + struct.pack("<I", zlib.crc32(payload, zlib.crc32(bytes(head)))) + payload
    with pytest.raises(ValidationError, match="repeats known values"):
        dec.decode(bad)


@pytest.mark.req("SR-42")
def test_a_frame_whose_coder_differs_from_its_streams_is_refused():
    x = _neural_like(200, 2)
    dec = Decoder()
    dec.decode(Encoder(2, entropy="rice").encode(x[:100]))
    other = Encoder(2, entropy="range", resync_frames=10)
    other.encode(x[:100])
    with pytest.raises(ValidationError, match="range coder; the stream has 2 and rice"):
        dec.decode(other.encode(x[100:]))                     # frame 1, not a resync point


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_decode_into_a_preallocated_buffer(entropy):
    x = _neural_like(300, 6, seed=4)
    enc, dec = Encoder(6, resync_frames=4, entropy=entropy), Decoder()
    buf = np.full_like(x, 7)
    for a in range(0, 300, 30):
        got = dec.decode(enc.encode(x[a:a + 30]), out=buf[a:a + 30])
        assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf, x)


def test_a_wrong_out_buffer_is_refused_and_the_stream_goes_on():
    x = _neural_like(90, 4, seed=5)
    enc, dec = Encoder(4, resync_frames=100), Decoder()
    f0, f1, f2 = (enc.encode(x[a:a + 30]) for a in (0, 30, 60))
    dec.decode(f0)
    for bad in (np.zeros((30, 3), np.int16), np.zeros((30, 4), np.int32), np.zeros((4, 30), np.int16).T,
                np.zeros((31, 4), np.int16), [[0] * 4] * 30):
        with pytest.raises(ValidationError, match="out must be"):
            dec.decode(f1, out=bad)
    assert dec.synchronised
    np.testing.assert_array_equal(np.concatenate([dec.decode(f1), dec.decode(f2)]), x[30:])


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_a_payload_cut_short_is_refused(entropy):
    """A frame whose payload lost its last bytes (header and CRC made consistent again) is refused."""
    import struct
    import zlib

    x = np.random.default_rng(6).integers(-32768, 32768, (200, 5)).astype(np.int16)   # escapes too
    frame = Encoder(5, entropy=entropy).encode(x)
    for cut in (1, 2, 9):
        bad = bytearray(frame[:-cut])
        bad[16:20] = struct.pack("<I", len(bad) - HEADER_SIZE)
        bad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad[HEADER_SIZE:]), zlib.crc32(bytes(bad[:20]))))
        with pytest.raises(ValidationError, match="does not decode"):
            Decoder().decode(bytes(bad))


def _cmap(n: int):
    from cortexlink.core.types import ChannelMap

    rng = np.random.default_rng(n)
    return ChannelMap([f"e{i}" for i in range(n)], rng.uniform(0, 500, (n, 2)), gain_uv=rng.uniform(0.1, 1, n),
                      offset_uv=rng.normal(0, 5, n), bad=rng.random(n) < 0.3)


def _same_map(a, b):
    assert a.channel_ids == b.channel_ids
    for k in ("positions_um", "gain_uv", "offset_uv", "bad"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_channel_map_frame_round_trips(entropy):
    from cortexlink.codec import read_channel_map

    cm, x = _cmap(5), _neural_like(200, 5, seed=7)
    buf = encode_array(x, chunk_samples=30, entropy=entropy, channel_map=cm)
    assert read_header(buf).is_map and read_header(buf).n_samples == 0
    _same_map(read_channel_map(buf), cm)
    np.testing.assert_array_equal(decode_array(buf), x)
    assert read_channel_map(encode_array(x)) is None                       # a stream without one


@pytest.mark.req("SR-42")
def test_channel_map_frame_takes_no_part_in_the_sample_stream():
    cm, x = _cmap(4), _neural_like(120, 4, seed=8)
    enc, dec = Encoder(4, resync_frames=100, channel_map=cm), Decoder()
    frames = [enc.encode(x[a:a + 30]) for a in range(0, 120, 30)]
    stream = [frames[0], enc.map_frame(), frames[1], frames[2], enc.map_frame(), frames[3]]
    out = [dec.decode(f) for f in stream]
    assert [o.shape for o in out] == [(30, 4), (0, 4), (30, 4), (30, 4), (0, 4), (30, 4)]
    np.testing.assert_array_equal(np.concatenate(out), x)
    _same_map(dec.channel_map, cm)
    # a lost map frame costs nothing; a damaged one is refused and the stream goes on
    dec2 = Decoder()
    dec2.decode(frames[0])
    bad = bytearray(enc.map_frame())
    bad[-3] ^= 0x55
    with pytest.raises(ValidationError, match="channel-map frame.*CRC"):
        dec2.decode(bytes(bad))
    assert dec2.synchronised and dec2.channel_map is None
    np.testing.assert_array_equal(dec2.decode(frames[1]), x[30:60])


def test_bad_channel_maps_are_refused():
    import struct
    import zlib

    from cortexlink.codec.stream import FLAG_MAP, HEADER, MAGIC, VERSION

    with pytest.raises(ConfigError, match="channel_map has 3 channels"):
        Encoder(4, channel_map=_cmap(3))
    with pytest.raises(ConfigError, match="must be a ChannelMap"):
        Encoder(4, channel_map={"channel_ids": ["a"]})
    with pytest.raises(ConfigError, match="no channel_map"):
        Encoder(4).map_frame()

    def frame(payload: bytes, nc: int = 2, ns: int = 0, flags: int = FLAG_MAP) -> bytes:
        head = HEADER.pack(MAGIC, VERSION, flags, nc, ns, 0, len(payload), 0)[:-4]
        return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF) + payload

    with pytest.raises(ValidationError, match="no valid channel map"):
        Decoder().decode(frame(b"not json"))
    with pytest.raises(ValidationError, match="no valid channel map"):
        Decoder().decode(frame(b'{"channel_ids": ["a", "a"]}'))
    three = Encoder(3, channel_map=_cmap(3)).map_frame()[HEADER_SIZE:]
    with pytest.raises(ValidationError, match="maps 3 channels in a frame of 2"):
        Decoder().decode(frame(three, nc=2))
    with pytest.raises(ValidationError, match="channel-map frame with flags"):
        read_header(frame(b"{}", flags=FLAG_MAP | 0x01))
    with pytest.raises(ValidationError, match="channel-map frame with flags"):
        read_header(frame(b"{}", ns=5))
    dec = Decoder()                                                      # the stream's channel count
    dec.decode(Encoder(2).encode(np.zeros((3, 2), np.int16)))
    with pytest.raises(ValidationError, match="the stream has 2"):
        dec.decode(Encoder(3, channel_map=_cmap(3)).map_frame())


def _rice_cases():
    rng = np.random.default_rng(11)
    yield "full_range", rng.integers(-32768, 32768, (300, 7)).astype(np.int16), 30     # escapes
    yield "rails", np.tile(np.array([[-32768], [32767], [32767], [-32768]], np.int16), (40, 3)), 7
    yield "lattice", (np.round(rng.integers(-100, 100, (2000, 5)) * 64.1)).astype(np.int16), 500   # tables
    yield "neural", _neural_like(600, 33, seed=12), 30
    yield "one_sample_frames", rng.integers(-300, 300, (40, 4)).astype(np.int16), 1
    yield "two_sample_frames", (np.round(rng.integers(-50, 50, (300, 3)) * 64.1)).astype(np.int16), 2


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("name, x, frame", list(_rice_cases()))
def test_channel_parallel_rice_kernels_equal_the_reference(name, x, frame):
    """The Rice coder's channel-parallel kernels write the reference kernels' bytes and states,
    and read them back to the same samples and states."""
    from cortexlink.codec import _kernels as K
    from cortexlink.codec import _rice as R
    from cortexlink.codec import _tables

    nc = x.shape[1]
    updates = _tables.choose_new(x, [None] * nc, [])
    tabs, offs = _tables.flatten(_tables.merge([None] * nc, updates) if updates else [None] * nc)
    s_ref, s_new, d_ref, d_new = (K.init_state(nc) for _ in range(4))
    for a in range(0, x.shape[0], frame):
        d = np.ascontiguousarray(x[a:a + frame])
        o_ref, o_new = np.zeros(d.size * 8 + 64, np.uint8), np.zeros(d.size * 8 + 64, np.uint8)
        n_ref = K.encode_kernel(d, *s_ref, tabs, offs, o_ref)
        n_new = R.encode_rice(d, *s_new, tabs, offs, o_new)
        assert n_new == n_ref and np.array_equal(o_new[:n_new], o_ref[:n_ref])
        for p, q in zip(s_ref, s_new):
            np.testing.assert_array_equal(q, p)
        y_ref, y_new = np.empty_like(d), np.empty_like(d)
        payload = o_ref[:n_ref].copy()
        assert K.decode_kernel(payload, y_ref, *d_ref, tabs, offs) == n_ref
        assert R.decode_rice(payload, y_new, *d_new, tabs, offs) == n_ref
        np.testing.assert_array_equal(y_new, d)
        for p, q in zip(d_ref, d_new):
            np.testing.assert_array_equal(q, p)


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("extra", [1, 3, 9])
@pytest.mark.parametrize("entropy", ENTROPY_CODERS)
def test_bytes_after_the_coded_samples_are_refused(entropy, extra):
    """A payload with bytes beyond its samples' bits (header and CRC made consistent) is refused."""
    import struct
    import zlib

    x = _neural_like(100, 4, seed=13)
    frame = Encoder(4, entropy=entropy).encode(x)
    bad = bytearray(frame + b"\x00" * extra)
    bad[16:20] = struct.pack("<I", len(bad) - HEADER_SIZE)
    bad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad[HEADER_SIZE:]), zlib.crc32(bytes(bad[:20]))))
    with pytest.raises(ValidationError, match="does not decode"):
        Decoder().decode(bytes(bad))


def test_rice_parameter_from_bit_lengths_equals_counting_up():
    from numba import njit

    from cortexlink.codec._kernels import MAX_K, _rice_k

    @njit
    def mismatches(A, N):
        acc = np.zeros((1, 2), np.int64)
        bad = 0
        for i in range(A.size):
            acc[0, 0], acc[0, 1] = A[i], N[i]
            k = 0
            while (N[i] << k) < A[i] and k < MAX_K:
                k += 1
            bad += _rice_k(acc, 0) != k
        return bad

    rng = np.random.default_rng(14)
    A = np.concatenate([rng.integers(0, 1 << 24, 200_000), np.arange(5000)]).astype(np.int64)
    N = np.concatenate([rng.integers(1, 32, 200_000), np.tile(np.arange(1, 33), 157)[:5000]]).astype(np.int64)
    assert mismatches(A, N) == 0


def _raw_frame(payload: bytes, nc: int = 2, ns: int = 0, flags: int | None = None, idx: int = 0) -> bytes:
    import struct
    import zlib

    from cortexlink.codec.stream import FLAG_MAP, HEADER, MAGIC, VERSION

    flags = FLAG_MAP if flags is None else flags
    head = HEADER.pack(MAGIC, VERSION, flags, nc, ns, idx, len(payload), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF) + payload


@pytest.mark.parametrize("payload", [
    b"[" * 100_000 + b"]" * 100_000,                                               # nesting
    b'{"channel_ids": ["a", "b"], "gain_uv": 1' + b"0" * 400 + b"}",                # an int beyond float
    b'{"channel_ids": ["a", "b"], "offset_uv": NaN}',                               # a non-JSON constant
    b'{"channel_ids": ["a", "b"], "positions_um": [[Infinity, 0], [0, 0]]}',
    b"\xff\xfe",
    b"[1, 2]",
])
def test_crafted_channel_map_payloads_are_refused_cleanly(payload):
    with pytest.raises(ValidationError, match="no valid channel map"):
        Decoder().decode(_raw_frame(payload))


def test_a_map_with_non_finite_values_is_not_written():
    from cortexlink.core.types import ChannelMap

    cm = ChannelMap(["a", "b"], [[0, 0], [np.nan, 1]])
    with pytest.raises(ConfigError, match="finite"):
        Encoder(2, channel_map=cm)


@pytest.mark.req("SR-42")
def test_decode_array_does_not_trust_declared_sizes():
    """Headers that declare far more samples than their stream could hold are decoded (and refused)
    frame by frame, not allocated up front."""
    from cortexlink.codec.stream import FLAG_RESYNC

    crafted = b"".join(_raw_frame(b"", nc=1, ns=1 << 20, flags=FLAG_RESYNC, idx=i) for i in range(1000))
    with pytest.raises(ValidationError, match="does not decode"):
        decode_array(crafted)
    mixed = encode_array(np.zeros((10, 1), np.int16)) + encode_array(np.zeros((10, 2), np.int16))
    with pytest.raises(ValidationError, match=r"frames of \[1, 2\] channels"):
        decode_array(mixed)
    zeros = np.zeros((300_000, 4), np.int16)                         # compresses > 64x: the slow path
    buf = encode_array(zeros, entropy="range")
    assert 2 * zeros.size > 64 * len(buf)
    np.testing.assert_array_equal(decode_array(buf), zeros)


def test_read_channel_map_skips_a_damaged_copy_and_a_new_width_forgets_the_map():
    from cortexlink.codec import read_channel_map

    cm = _cmap(3)
    enc = Encoder(3, channel_map=cm)
    good = enc.map_frame()
    bad = bytearray(good)
    bad[-2] ^= 0x40
    stream = bytes(bad) + good + enc.encode(np.zeros((5, 3), np.int16))
    _same_map(read_channel_map(stream), cm)
    with pytest.raises(ValidationError, match="CRC"):
        read_channel_map(bytes(bad) + enc.encode(np.zeros((5, 3), np.int16)))
    dec = Decoder()
    dec.decode(good)
    dec.decode(Encoder(3).encode(np.zeros((4, 3), np.int16)))
    assert dec.channel_map is not None
    dec.decode(Encoder(5).encode(np.zeros((4, 5), np.int16)))          # a resync point of another width
    assert dec.channel_map is None
