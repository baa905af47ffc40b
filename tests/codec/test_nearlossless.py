"""Near-lossless mode: the error bound holds for every sample (int16 limits included), 0 is
lossless, the stream decodes chunk by chunk with no side information, and bad input is refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortexlink.codec import encode_array
from cortexlink.codec.nearlossless import (NearLosslessDecoder, NearLosslessEncoder, decode_array_nl,
                                           dequantize, encode_array_nl, quantize, steps_for)
from cortexlink.core.errors import ConfigError, ValidationError

LIMITS = np.array([-32768, -32767, -32766, -32700, -1, 0, 1, 32700, 32765, 32766, 32767], np.int16)


def _check_bound(x, y, max_error_uv, gain):
    err_uv = np.abs(y.astype(np.int64) - x.astype(np.int64)) * np.broadcast_to(gain, (x.shape[1],))
    assert (err_uv <= max_error_uv).all(), float(err_uv.max())


def test_every_int16_value_within_the_bound_for_many_steps():
    x = np.arange(-32768, 32768, dtype=np.int16)[:, None]
    for d in [0, 1, 2, 3, 4, 7, 31, 32, 100, 1000, 16383, 32767]:
        q = np.array([2 * d + 1])
        y = dequantize(quantize(x, q), q)
        assert np.abs(y.astype(np.int64) - x.astype(np.int64)).max() <= d, d
    assert (dequantize(quantize(x, np.array([1])), np.array([1])) == x).all()


def test_steps_never_pass_the_bound_in_floating_point():
    assert steps_for(0.585, 0.195, 1)[0] == 5          # 0.585 / 0.195 rounds to 3.0000000000000004
    assert steps_for(1.0, 0.5, 1)[0] == 5
    assert steps_for(0.0, 0.195, 2).tolist() == [1, 1]
    assert steps_for(0.1, 0.195, 1)[0] == 1
    assert steps_for(1e9, 1.0, 1)[0] == 65535
    assert steps_for(2.0, np.array([0.5, 1.0, 3.0]), 3).tolist() == [9, 5, 1]


@pytest.mark.parametrize("max_error_uv", [0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 20000.0])
def test_stream_round_trip_bound_chunked_with_per_channel_gains(max_error_uv):
    rng = np.random.default_rng(int(max_error_uv))
    gain = np.array([0.195, 0.195, 1.0, 0.37])
    x = np.cumsum(rng.normal(0, 200, (3000, 4)), axis=0).clip(-32768, 32767).astype(np.int16)
    x[:LIMITS.size] = LIMITS[:, None]
    x[-LIMITS.size:] = LIMITS[::-1, None]
    enc = NearLosslessEncoder(4, max_error_uv=max_error_uv, uv_per_count=gain, resync_frames=3)
    dec = NearLosslessDecoder()
    frames = [enc.encode(x[i:i + 97]) for i in range(0, x.shape[0], 97)]
    y = np.concatenate([dec.decode(f) for f in frames])
    assert y.dtype == np.int16 and y.shape == x.shape
    _check_bound(x, y, max_error_uv, gain)
    assert np.array_equal(decode_array_nl(b"".join(frames)), y)
    if max_error_uv == 0:
        assert np.array_equal(y, x)
    # a decoder that starts at a resynchronisation point (frame 3) needs nothing else
    late = NearLosslessDecoder()
    assert np.array_equal(np.concatenate([late.decode(f) for f in frames[3:]]), y[3 * 97:])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=300), st.floats(0, 5000),
       st.floats(0.01, 50), st.integers(1, 64))
def test_bound_holds_for_any_samples(values, max_error_uv, gain, chunk):
    x = np.asarray(values, np.int16)[:, None]
    y = decode_array_nl(encode_array_nl(x, max_error_uv=max_error_uv, uv_per_count=gain, chunk_samples=chunk,
                                        resync_frames=2))
    _check_bound(x, y, max_error_uv, gain)


def test_a_larger_bound_costs_fewer_bits():
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(0, 30, (20000, 2)), axis=0).astype(np.int16)
    sizes = [len(encode_array_nl(x, max_error_uv=e, uv_per_count=0.195)) for e in (0, 1, 5, 20)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 2
    # bound 0: the lossless codec's frames plus the prefixes (steps in the first, a resync point)
    assert sizes[0] - len(encode_array(x, chunk_samples=4096)) == (12 + 2 * 2) + 4 * 12


def test_refusals():
    with pytest.raises(ConfigError, match="max_error_uv must be a finite number >= 0"):
        NearLosslessEncoder(2, max_error_uv=-1)
    with pytest.raises(ConfigError, match="uv_per_count must be finite and > 0"):
        NearLosslessEncoder(2, max_error_uv=1, uv_per_count=[0.2, 0.0])
    with pytest.raises(ConfigError, match="one per channel"):
        NearLosslessEncoder(2, max_error_uv=1, uv_per_count=[0.2, 0.2, 0.2])
    enc = NearLosslessEncoder(2, max_error_uv=1, uv_per_count=0.195)
    with pytest.raises(ValidationError, match="int16 array of samples x 2 channels"):
        enc.encode(np.zeros((4, 2), np.float32))
    frames = [enc.encode(np.full((10, 2), i, np.int16)) for i in range(3)]
    dec = NearLosslessDecoder()
    with pytest.raises(ValidationError, match="depends on earlier frames"):
        dec.decode(frames[1])
    bad = bytearray(frames[0])
    bad[9] ^= 1                                     # a step in the prefix
    with pytest.raises(ValidationError, match="CRC-32 mismatch in its prefix"):
        dec.decode(bytes(bad))
    with pytest.raises(ValidationError, match="not a near-lossless frame"):
        dec.decode(frames[0][12 + 4:])
    with pytest.raises(ValidationError, match="truncated"):
        decode_array_nl(frames[0][:-3])
