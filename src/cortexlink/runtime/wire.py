"""The wire format of bus messages over Redis Streams: stream fields of a :class:`Message`
(integers as text, arrays as raw bytes with dtype and shape, other dict values as JSON; no
pickle) and the Redis protocol packing of commands that carry large arrays without a copy.

Message kinds (field ``k``): ``n`` none, ``c`` chunk (samples as raw bytes), ``z`` chunk whose
samples are one frame of the lossless codec (the bus's ``chunk_codec`` option; see
:mod:`cortexlink.runtime.chunk_codec`), ``a`` array, ``t`` typed payload, ``d`` dict."""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from cortexlink.core.jsonutil import json_default
from cortexlink.core.messages import BinRow, Control, CursorState, FeatureBin, Gate, ParticipantIntent
from cortexlink.core.speech_messages import PhonemeFrame, SpeechControl, SpeechCue, SpeechIntent, SpeechText
from cortexlink.core.types import Chunk, Intent
from cortexlink.runtime.bus import Message

__all__ = ["encode_message", "decode_message", "pack_command", "WIRE_TYPES"]

#: Typed payloads, sent as their ``to_dict()`` (arrays as raw bytes, the rest as JSON) with their type
#: name and rebuilt with ``from_dict``.
WIRE_TYPES: dict[str, Any] = {t.__name__: t for t in (Intent, FeatureBin, ParticipantIntent, CursorState, Control,
                                                      Gate, BinRow, SpeechCue, SpeechIntent, SpeechControl,
                                                      PhonemeFrame, SpeechText)}


def _json_default(o: Any) -> Any:
    try:
        return json_default(o)
    except TypeError:
        raise TypeError(f"cannot send {type(o).__name__} over the bus (arrays, numbers, strings, lists and "
                        "dicts only)") from None


def _wire(a: np.ndarray) -> bytes | memoryview:
    """The bytes of ``a`` for the wire: a large C-contiguous array as a flat view of its own
    memory (written to the socket without a copy; the send completes before the publisher
    returns), anything else as a copy."""
    if a.nbytes > _PACK_BIG and a.flags.c_contiguous:
        return memoryview(a).cast("B")
    return a.tobytes()


def _put_dict(f: dict[bytes, Any], p: dict) -> None:
    """Fields of a dict payload: its numeric arrays as raw bytes (``a:<key>``), the rest as JSON."""
    plain: dict[str, Any] = {}
    arrays: dict[str, list] = {}
    for k, v in p.items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            arrays[k] = [v.dtype.str, list(v.shape)]
            f[("a:" + k).encode()] = v.tobytes()
        else:
            plain[k] = v
    if arrays:
        plain["__arrays__"] = arrays
    f[b"j"] = json.dumps(plain, default=_json_default)


def _get_dict(f: dict[bytes, bytes]) -> dict:
    """Inverse of :func:`_put_dict`."""
    payload = json.loads(f[b"j"])
    arrays = payload.pop("__arrays__", None)
    if arrays:
        for k, (dt, shape) in arrays.items():
            payload[k] = _array(f[("a:" + k).encode()], dt, shape)
    return payload


def encode_message(msg: Message, frame: bytes | None = None) -> dict[bytes, Any]:
    """Redis stream fields of ``msg``: integers as text, arrays as raw bytes with dtype and
    shape, other dict values as JSON (no pickle). ``frame``: a chunk's samples as one codec
    frame (kind ``z``) instead of raw bytes."""
    p = msg.payload
    f: dict[bytes, Any] = {b"q": msg.seq, b"s": msg.sample, b"e": msg.t_enter_ns, b"p": msg.t_pub_ns}
    if p is None:
        f[b"k"] = b"n"
    elif frame is not None and isinstance(p, Chunk):
        f[b"k"] = b"z"
        f[b"x"] = frame
        f[b"fs"] = repr(float(p.fs_hz))
        f[b"ss"] = p.start_sample
        f[b"cs"] = p.seq
        f[b"ht"] = p.host_time_ns
    elif isinstance(p, Chunk):
        a = p.data
        f[b"k"] = b"c"
        f[b"dt"] = a.dtype.str
        f[b"sh"] = ",".join(map(str, a.shape))
        f[b"x"] = _wire(a)
        f[b"fs"] = repr(float(p.fs_hz))
        f[b"ss"] = p.start_sample
        f[b"cs"] = p.seq
        f[b"ht"] = p.host_time_ns
    elif isinstance(p, np.ndarray):
        f[b"k"] = b"a"
        f[b"dt"] = p.dtype.str
        f[b"sh"] = ",".join(map(str, p.shape))
        f[b"x"] = _wire(p)
    elif WIRE_TYPES.get(type(p).__name__) is type(p):
        f[b"k"] = b"t"
        f[b"t"] = type(p).__name__
        _put_dict(f, p.to_dict())
    elif isinstance(p, dict):
        f[b"k"] = b"d"
        _put_dict(f, p)
    else:
        raise TypeError(f"cannot send a {type(p).__name__} payload over Redis (ndarray, Chunk, "
                        f"{', '.join(WIRE_TYPES)}, dict or None)")
    return f


def _array(buf: bytes, dtype: str, shape: Iterable[int]) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if not buf:
        return np.zeros(shape, dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def decode_message(topic: str, f: dict[bytes, bytes], data: np.ndarray | None = None) -> Message:
    """Inverse of :func:`encode_message` (arrays are read-only views of the received bytes). A
    compressed chunk (kind ``z``) needs its decoded samples as ``data`` (the topic's decoder
    holds the state between frames: :class:`~cortexlink.runtime.chunk_codec.ChunkCodecs`)."""
    kind = f[b"k"]
    if kind == b"c" or kind == b"z":
        if kind == b"c":
            data = _array(f[b"x"], f[b"dt"].decode(), f[b"sh"].split(b","))
        elif data is None:
            raise ValueError(f"topic {topic}: a compressed chunk (kind z) needs its decoded samples (data=)")
        payload: Any = Chunk(data, float(f[b"fs"]), int(f[b"ss"]), int(f[b"ht"]), int(f[b"cs"]))
    elif kind == b"a":
        shape = [s for s in f[b"sh"].split(b",") if s]
        payload = _array(f[b"x"], f[b"dt"].decode(), shape)
    elif kind == b"t":
        name = f[b"t"]
        payload = WIRE_TYPES[name.decode() if isinstance(name, bytes) else name].from_dict(_get_dict(f))
    elif kind == b"d":
        payload = _get_dict(f)
    else:
        payload = None
    return Message(topic, int(f[b"q"]), int(f[b"s"]), int(f[b"e"]), payload, int(f[b"p"]))


#: Values longer than this are written to the socket as they are, not copied into the header.
_PACK_BIG = 16384


def pack_command(args: Iterable[Any]) -> list:
    """A command in the Redis protocol (RESP), as a list of byte strings for ``sendall``: the
    small parts joined, large values (raw chunks) left as they are, so a 60 kB chunk is never
    copied on its way to the socket."""
    args = list(args)
    out: list = []
    buf = bytearray(b"*%d\r\n" % len(args))
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, bool) or a is None:
            raise TypeError(f"cannot send {a!r} to Redis (bytes, str, int or float)")
        elif isinstance(a, int):
            a = b"%d" % a
        elif isinstance(a, float):
            a = repr(a).encode()
        elif not isinstance(a, (bytes, bytearray, memoryview)):
            raise TypeError(f"cannot send a {type(a).__name__} to Redis (bytes, str, int or float)")
        n = a.nbytes if isinstance(a, memoryview) else len(a)
        buf += b"$%d\r\n" % n
        if n > _PACK_BIG:
            out.append(bytes(buf))
            out.append(a)
            buf = bytearray(b"\r\n")
        else:
            buf += a
            buf += b"\r\n"
    out.append(bytes(buf))
    return out
