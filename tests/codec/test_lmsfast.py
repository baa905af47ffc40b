"""The fast LMS coder (``entropy="lms-fast"``): its letters, its adaptive frequency tables, its two
range-coder lanes, and its size against the LMS and range coders. Round trips, chunking,
corruption and truncation are covered for every coder in ``test_codec``."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from _shared_data import need
from numba import njit

from cortexlink.codec import Decoder, Encoder, decode_array, encode_array, read_header
from cortexlink.codec import _lmsfast as F


@njit(cache=False)
def _letters_of(e):
    n = e.shape[0]
    s = np.empty(n, np.int64)
    v = np.empty(n, np.int64)
    nv = np.empty(n, np.int64)
    for i in range(n):
        s[i], v[i], nv[i] = F._letter(np.int64(e[i]))
    return s, v, nv


def _neural_like(n: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 30, (n, c)), axis=0)
    return np.clip(walk + rng.normal(0, 200, (n, c)), -32768, 32767).astype(np.int16)


def test_every_residual_has_a_letter_and_comes_back_from_it():
    e = np.arange(-65535, 65536, dtype=np.int64)
    s, v, nv = _letters_of(e)
    assert s.min() == 0 and s.max() == F.NSYM - 1
    assert set(np.unique(s)) == set(range(F.NSYM))                    # no letter is unreachable
    nlow = F._NLOW[s].astype(np.int64)
    np.testing.assert_array_equal(nv, np.where(e == 0, 0, nlow + 1))
    assert nv.max() <= 13 and (v >> np.maximum(nv, 0) == 0).all()      # the bits fit their count
    m = (F._HEAD[s].astype(np.int64) << nlow) | (v >> 1)
    np.testing.assert_array_equal(np.where(v & 1, -m, m), e)
    assert (s[np.abs(e) < 16] == np.abs(e)[np.abs(e) < 16]).all()      # small residuals: their own letter
    # the table and the computed path agree at the table's edge
    edge = np.array([F.LUT_SIZE - 1, F.LUT_SIZE, -F.LUT_SIZE, F.LUT_SIZE + 1], np.int64)
    es, ev, env = _letters_of(edge)
    np.testing.assert_array_equal(es, [79, 80, 80, 80])       # nb 11, top bits 111 | nb 12, top bits 000
    np.testing.assert_array_equal(env, [9, 10, 10, 10])


@pytest.mark.parametrize("seed", range(4))
def test_rebuilt_tables_are_a_distribution_and_the_lookup_finds_every_slot(seed):
    rng = np.random.default_rng(seed)
    state = F.init_state(3)
    cnt, cum, look = state[4], state[5], state[6]
    cnt[:] = 0
    cnt[0] = rng.integers(0, 50, F.NSYM)                   # small counts
    cnt[1, 7] = 1 << 20                                    # one letter far over the halving limit
    cnt[2] = rng.integers(0, 3000, F.NSYM)
    cnt[2, 20:] = 0                                        # letters never seen still codable
    for k in range(3):
        F._rebuild(cnt, cum, look, k, True)
        f = np.diff(cum[k].astype(np.int64))
        assert cum[k, 0] == 0 and cum[k, -1] == F.M and (f >= 1).all()
        assert np.argmax(f) == np.argmax(cnt[k]) or cnt[k].max() == 0
        slots = np.arange(F.M)
        letter = np.searchsorted(cum[k], slots, side="right") - 1
        start = look[k][slots >> F.BUCKET_SHIFT]
        bucket_start = (slots >> F.BUCKET_SHIFT) << F.BUCKET_SHIFT
        np.testing.assert_array_equal(start, letter[bucket_start])   # the letter holding each bucket's first slot
    assert cnt[1, 7] == (1 << 19)                          # halved once per rebuild


def test_initial_tables_follow_each_contexts_scale():
    """Context k starts from a geometric |e| of mean ~2**(k - 0.5): its likeliest letter grows with k."""
    cum = F.init_state(1)[5].astype(np.int64)
    likeliest = np.argmax(np.diff(cum, axis=1), axis=1)
    assert likeliest[0] == 0
    assert (np.diff(likeliest[:12]) >= 0).all() and likeliest[11] > 16


def test_frames_say_lms_fast_and_hold_two_lanes_and_the_bits():
    x = _neural_like(300, 5)
    enc = Encoder(5, entropy="lms-fast")
    frame = enc.encode(x)
    h = read_header(frame)
    assert h.coder == "lms-fast" and frame[5] & 0x0C == 0x0C
    body = np.frombuffer(frame[24:], np.uint8)
    la = int.from_bytes(bytes(body[:4]), "little")
    lb = int.from_bytes(bytes(body[4:8]), "little")
    assert 4 <= la and 4 <= lb and 8 + la + lb < len(body)     # 3 even channels in A, 2 odd in B
    assert la > lb
    np.testing.assert_array_equal(Decoder().decode(frame), x)
    one = Encoder(1, entropy="lms-fast").encode(x[:, :1])
    body = np.frombuffer(one[24:], np.uint8)
    assert int.from_bytes(bytes(body[4:8]), "little") == 4    # one channel: lane B is its 4 flush bytes


def test_a_frame_whose_lane_lengths_lie_is_refused():
    import struct
    import zlib

    from cortexlink.core.errors import ValidationError

    frame = bytearray(Encoder(4, entropy="lms-fast").encode(_neural_like(200, 4)))
    for lie in (b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x06\x00\x00\x00"):
        bad = bytearray(frame)
        bad[24:28] = lie
        bad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad[24:]), zlib.crc32(bytes(bad[:20]))))
        with pytest.raises(ValidationError, match="payload does not decode"):
            Decoder().decode(bytes(bad))


def test_size_is_the_lms_coders_and_below_the_range_coders():
    x = _neural_like(20000, 8, seed=3)
    sizes = {e: len(encode_array(x, chunk_samples=600, entropy=e)) for e in ("range", "lms", "lms-fast")}
    assert sizes["lms-fast"] < sizes["range"]
    assert abs(sizes["lms-fast"] / sizes["lms"] - 1) < 0.03, sizes


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("nch", [2, 3, 64, 1025])
def test_wide_and_odd_streams_round_trip_through_the_two_lanes(nch):
    x = _neural_like(97, nch, seed=nch)
    x[40:45, ::3] = 32767                        # rails: residuals over the letter table's range
    x[45:50, 1::3] = -32768
    enc, dec = Encoder(nch, resync_frames=3, entropy="lms-fast"), Decoder()
    for i in range(0, 97, 13):
        np.testing.assert_array_equal(dec.decode(enc.encode(x[i:i + 13])), x[i:i + 13])


def test_real_n1_files_lms_fast_is_as_small_as_lms(shared_data):
    folder = need(shared_data / "n1_broadband", "N1 WAV files", glob="*.wav")
    sizes = {"range": 0, "lms": 0, "lms-fast": 0}
    for f in sorted(folder.glob("*.wav"))[:6]:
        with wave.open(str(f)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)[:, None]
        for e in sizes:
            buf = encode_array(x, chunk_samples=8 * 19531, entropy=e)
            sizes[e] += len(buf)
            if e == "lms-fast":
                np.testing.assert_array_equal(decode_array(buf), x)
    assert sizes["lms-fast"] < 0.99 * sizes["range"]
    assert sizes["lms-fast"] < 1.005 * sizes["lms"], sizes


@pytest.mark.parametrize("data", ["neural", "lattice"])
def test_prediction_is_the_lms_coders_to_the_bit(data):
    """Same samples through both coders: the LMS weights, the history of differences, the level
    tap and the running mean end up identical, which they only do if every prediction was."""
    rng = np.random.default_rng(9)
    if data == "neural":
        x = _neural_like(3000, 7, seed=4)
    else:                                                  # value tables: indices, not values
        x = (np.round(np.cumsum(rng.integers(-3, 4, (3000, 5)), axis=0) * 64.1)).astype(np.int16)
    a, b = Encoder(x.shape[1], entropy="lms"), Encoder(x.shape[1], entropy="lms-fast")
    for i in range(0, 3000, 250):
        a.encode(x[i:i + 250])
        b.encode(x[i:i + 250])
    _, hd, lw, mag, _, _ = a._state
    _, ring, lw_fast, ch, head = b._state[:5]
    np.testing.assert_array_equal(lw, lw_fast.T)
    assert lw.any()                                        # the weights did move
    newest_first = [(int(head[0]) - j) & (F.LMS_ORDER - 1) for j in range(F.LMS_ORDER)]
    np.testing.assert_array_equal(hd[:, :F.LMS_ORDER], ring[newest_first].T)
    np.testing.assert_array_equal(hd[:, F.LMS_ORDER], ch[0])
    np.testing.assert_array_equal(mag[:, 2], ch[2])


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("nch", [1, 2, 5, 33])
def test_damaged_payloads_with_a_matching_crc_are_refused_or_decode_never_crash(nch):
    """Bytes changed anywhere in the payload (lane lengths, lanes, plain bits) and payloads cut
    short, the CRC rewritten to match: the decoder refuses them or returns int16, never crashes."""
    import struct
    import zlib

    from cortexlink.core.errors import ValidationError

    rng = np.random.default_rng(nch)
    x = _neural_like(120, nch, seed=nch)
    x[:, ::2] = (np.round(x[:, ::2] / 64.1) * 64.1).astype(np.int16)   # some channels with tables
    enc = Encoder(nch, entropy="lms-fast")
    frames = [enc.encode(x[:60]), enc.encode(x[60:])]
    refused = 0
    for trial in range(150):
        which = trial % 2
        bad = bytearray(frames[which])
        if trial % 5 == 4:                                 # cut short
            bad = bad[:24 + int(rng.integers(0, len(bad) - 24))]
            bad[16:20] = struct.pack("<I", len(bad) - 24)
        else:
            for pos in rng.integers(24, len(bad), int(rng.integers(1, 4))):
                bad[pos] = int(rng.integers(0, 256))
        bad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad[24:]), zlib.crc32(bytes(bad[:20]))))
        dec = Decoder()
        try:
            if which:
                dec.decode(frames[0])
            y = dec.decode(bytes(bad))
        except ValidationError:
            refused += 1
            continue
        assert y.dtype == np.int16 and y.shape == (60, nch)
    assert refused > 100
