"""cortexlink.codec: bit-exact round trips, chunking invariance, CRC, resynchronisation, N1 files."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from cortexlink.codec import Decoder, Encoder, decode_array, encode_array, iter_frames, read_header
from cortexlink.codec.stream import HEADER_SIZE
from cortexlink.core.errors import ConfigError, ValidationError


def _roundtrip(x: np.ndarray, chunk: int, **kw) -> np.ndarray:
    enc, dec = Encoder(x.shape[1], **kw), Decoder()
    parts = [dec.decode(enc.encode(x[i:i + chunk])) for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts)


def _neural_like(n: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 30, (n, c)), axis=0)
    return np.clip(walk + rng.normal(0, 200, (n, c)), -32768, 32767).astype(np.int16)


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
@pytest.mark.parametrize("entropy", ["range", "rice"])
def test_round_trip_is_bit_exact(name, x, chunk, entropy):
    y = _roundtrip(x, chunk, entropy=entropy)
    assert y.dtype == np.int16 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(decode_array(encode_array(x, chunk_samples=chunk, entropy=entropy)), x)


def test_worst_case_residuals_fit_the_range_coders_buffer():
    # a long run of small residuals makes the models sure, then full-scale jumps cost most
    x = np.zeros((6000, 3), np.int16)
    x[3000::2] = 32767
    x[3001::2] = -32768
    x[5000:] = np.random.default_rng(4).integers(-32768, 32768, (1000, 3))
    for chunk in (1, 2000, 6000):
        np.testing.assert_array_equal(_roundtrip(x, chunk), x)


@pytest.mark.parametrize("entropy", ["range", "rice"])
def test_round_trip_1024_channels(entropy):
    x = _neural_like(60, 1024, seed=3)
    x[:, 5] = 32767
    x[:, 6] = -32768
    np.testing.assert_array_equal(_roundtrip(x, 30, entropy=entropy), x)


def test_full_range_ramp_round_trips():
    x = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(-1, 2)
    np.testing.assert_array_equal(_roundtrip(x, 1000), x)
    np.testing.assert_array_equal(_roundtrip(x[::-1].copy(), 777), x[::-1])


@pytest.mark.parametrize("resync", [1, 3, 1000])
@pytest.mark.parametrize("entropy", ["range", "rice"])
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


@pytest.mark.parametrize("entropy", ["range", "rice"])
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
    for entropy in ("range", "rice"):
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


def test_range_coder_compresses_better_than_rice():
    x = _neural_like(20000, 2, seed=11)
    assert len(encode_array(x, entropy="range")) < len(encode_array(x, entropy="rice"))


def test_real_n1_files_round_trip(shared_data):
    folder = shared_data / "n1_broadband"
    files = sorted(folder.glob("*.wav"))
    if not files:
        pytest.skip(f"no N1 WAV files in {folder}")
    wav_bytes = packed = 0
    for f in files[:12]:
        x = _read_wav(f)
        buf = encode_array(x, chunk_samples=19531)
        np.testing.assert_array_equal(decode_array(buf)[:, 0], x)
        np.testing.assert_array_equal(_roundtrip(x[:2000, None], 20), x[:2000, None])
        wav_bytes += f.stat().st_size
        packed += len(buf)
    assert wav_bytes / packed > 2.0


def test_round_trip_property():
    """Any int16 array, any chunking, either coder: the samples come back exactly."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(x=arrays(np.int16, st.tuples(st.integers(1, 300), st.integers(1, 5))),
           chunk=st.integers(1, 310), resync=st.integers(1, 5), entropy=st.sampled_from(["range", "rice"]),
           step=st.sampled_from([1, 3, 64]))
    def check(x, chunk, resync, entropy, step):
        x = (x.astype(np.int64) // step * step).astype(np.int16)   # sparse values exercise the tables
        np.testing.assert_array_equal(_roundtrip(x, chunk, resync_frames=resync, entropy=entropy), x)

    check()
