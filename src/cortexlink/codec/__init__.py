"""Lossless, bit-exact, causal streaming codec for int16 multichannel samples.

A chunk (samples x channels, int16) is encoded as soon as it arrives into one *frame*; a frame
decodes given the stream's state after the previous frame, or on its own when it is a
*resynchronisation point* (every ``resync_frames`` frames, the first included), so a lost frame
costs at most the frames up to the next resynchronisation point.

Coding (per channel, in integer arithmetic, identical in encoder and decoder)
----------------------------------------------------------------------------
- Working domain: a channel is coded as its values, or — when it has a *value table* — as
  indices into the sorted table of its values. The encoder gives a channel a table when a frame
  of >= 64 samples uses at most a quarter as many distinct values as samples, spread over at
  least twice as many codes (as a 10-bit ADC scaled into int16 does). Tables are part of the
  stream's state from one resynchronisation point to the next: a frame sends only the values
  new to a channel (flag bits 1 and 4, the *carried* section, see ``_tables``); frames of the
  earlier format, whose tables hold for that frame only (flag bit 1 alone), are still read.
  The history carried from the previous frame enters the table's domain as the index of the
  nearest table entry (ties to the lower one).
- Prediction: three fixed predictors over the last samples — order 1 ``x[n-1]``, order 2
  ``2x[n-1] - x[n-2]``, order 3 ``3x[n-1] - 3x[n-2] + x[n-3]`` (each clamped to the working
  domain: int16, or ``0..len(table)-1``) — and the one with the smallest decayed sum of
  absolute residuals so far (``cost -= cost >> 4; cost += |e|``, with predictions clamped to
  int16 here; ties to the lower order) predicts the next sample.
- Residual ``e = w - prediction`` (``w`` the value or the table index) is mapped to ``u = 2e``
  (e >= 0) or ``-2e - 1``. Its adaptive Rice parameter is the smallest ``k`` with
  ``N << k >= A`` (``A`` the sum of ``u``, ``N`` the count, both halved when ``N`` reaches 32;
  at the start ``A = 16, N = 1``); ``q = u >> k``.
- Entropy coding, one of four (flag bits 2 and 3):

  * *lms* (bit 3 alone): the strongest. Instead of the fixed predictors, a 16-tap sign-sign LMS
    filter over the last first differences plus a level tap, and every bit of the residual's
    binarisation modelled with adaptive 22-bit probabilities in the context of the channel's
    scale; see ``_lms`` for the exact arithmetic. ~3.5x on the Neuralink N1 files, about half
    the range coder's speed.
  * *lms-fast* (bits 2 and 3 both set): the LMS prediction above, computed for all channels
    of a sample row at once, and per sample one *letter* (``|e|`` below 16, else its bit length
    and the 3 bits under the leading one: 112 letters) range-coded with adaptive frequencies of
    the channel's scale context, in two lanes (even / odd channels), plus the residual's other
    low bits and its sign as plain bits; see ``_lmsfast``. About the LMS coder's size at ~3x
    the range coder's speed on 1,024 channels.
  * *range* (bit 2 alone, the default): ``q`` in unary, bit ``i`` modelled in context ``(k, i)``,
    then the top ``min(k, 3)`` of the ``k`` low bits of ``u``, most significant first, modelled
    in context ``(k, min(q, 2), position)``, and the remaining low bits as equiprobable groups of
    up to 8 bits (the range divided into ``2**nb`` equal parts); ``q >= 24``: 24 one-bits then
    ``u`` in 18 equiprobable bits.
    Models are 11-bit probabilities (start 1/2, moved 1/32 of the way after each bit), shared by
    the stream's channels; the coder is an adaptive binary range coder (LZMA's: 32-bit range,
    byte-wise normalisation below 2**24, 5 flush bytes). See ``_range``.
  * *Rice* (bit clear): ``q`` one-bits, a zero bit, then the ``k`` low bits of ``u``; when
    ``q >= 24``, 24 one-bits, a zero bit and ``u`` in 18 bits. Bits packed most significant
    first, the payload padded with zero bits to a whole byte.

- Samples are coded time-major (sample 0 of every channel, then sample 1, …).
- At a resynchronisation point every channel's state starts afresh: history 0, costs 0,
  ``A = 16, N = 1``, every model at 1/2, LMS weights 0, lms-fast's letter counts at their
  prior, its tables rebuilt from them and its rebuild intervals and scales at their start, no value
  tables.

Payload: when flag bit 1 is set, a value-table section comes first — with flag bit 4 (written
now) the carried section of ``_tables``; without it (the earlier format), per channel, LEB128
varints: the table's length ``T`` (0: no table), then if ``T > 0`` its first value + 32768 and
the ``T - 1`` gaps between successive values (each >= 1) — then the coded bits.

Frame layout (little-endian), 24-byte header then the payload
-------------------------------------------------------------
====== ===== ==========================================================================
offset bytes field
====== ===== ==========================================================================
0      4     magic ``b"CXLC"``
4      1     format version (1)
5      1     flags: bit 0 resynchronisation point, bit 1 value-table section, bit 2 range
             coded, bit 3 LMS coded (bits 2 and 3: lms-fast), bit 4 carried tables, bit 5
             channel-map frame
6      2     channel count (1..65535)
8      4     sample count of the frame
12     4     frame index in the stream (0, 1, 2, … modulo 2**32)
16     4     payload length in bytes
20     4     CRC-32 (zlib) of header bytes 0..19 followed by the payload
====== ===== ==========================================================================

A stream is frames concatenated. A *channel-map frame* (flag bit 5 alone, 0 samples, frame index
= that of the next data frame) carries the stream's channel map as its payload: the UTF-8 JSON
object of :meth:`cortexlink.core.types.ChannelMap.to_dict` (``channel_ids``, ``positions_um``,
``gain_uv``, ``offset_uv``, ``bad``; one entry per channel, in the frames' channel order), under
the same CRC-32. It takes no part in the sample state or the frame sequence: an encoder writes
it first (``Encoder(..., channel_map=...).map_frame()``, ``encode_array(..., channel_map=...)``)
and may repeat it; a :class:`Decoder` accepts it at any time, keeps it as ``Decoder.channel_map``
and returns no samples for it; :func:`read_channel_map` finds it in a stream. (The containers
that hold one codec frame per record — the session log's ``raw_codec`` stream, the near-lossless
prefix, ``.clz`` files — write no channel-map frames: they keep the map in their own headers.) The decoder refuses a frame whose CRC, length or payload is
wrong, and a non-resynchronisation frame whose index does not follow the last one it decoded,
with :class:`cortexlink.core.errors.ValidationError`.

Examples
--------
>>> import numpy as np
>>> from cortexlink.codec import Encoder, Decoder, encode_array, decode_array
>>> x = (np.arange(300, dtype=np.int16) % 50).reshape(100, 3)
>>> enc, dec = Encoder(3), Decoder()
>>> y = np.concatenate([dec.decode(enc.encode(x[i:i + 30])) for i in range(0, 100, 30)])
>>> bool((y == x).all()), bool((decode_array(encode_array(x)) == x).all())
(True, True)
"""

from .stream import (ENTROPY_CODERS, HEADER_SIZE, MAGIC, VERSION, Decoder, Encoder, FrameHeader,
                     decode_array, encode_array, iter_frames, read_channel_map, read_header)

__all__ = ["Encoder", "Decoder", "encode_array", "decode_array", "iter_frames", "read_header",
           "read_channel_map", "FrameHeader", "MAGIC", "VERSION", "HEADER_SIZE", "ENTROPY_CODERS"]
