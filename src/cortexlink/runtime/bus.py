"""Message buses of the runtime: in-process (default) and Redis Streams (several processes or hosts).

A :class:`Message` carries a payload (an ndarray, a :class:`~cortexlink.core.types.Chunk` or a
small dict) with the **source sample index** it refers to and the **monotonic time at which the
source chunk behind it entered the graph** (``t_enter_ns``), so that end-to-end latency can be
measured at any node.

Every edge of a graph is a :class:`Subscription`: a bounded queue with an explicit back-pressure
policy (:data:`POLICIES`):

``"drop_oldest"``
    A full queue drops its oldest message to make room; each drop is counted.
``"block"``
    The publisher waits until the consumer has made room (up to ``block_timeout_s``, then
    :class:`BackPressureError`). In one thread nobody can make room, so a full ``block`` queue
    whose consumer runs in the publisher's thread raises at once.
``"fail"``
    A full queue drops the new message, counts it and marks the edge overflowed; the consumer's
    next :meth:`Subscription.drain` raises :class:`BackPressureError` (its node fails and its
    supervisor decides).

Drops are never silent: every subscription counts them (``n_dropped``) and the runtime turns the
counts into ``dropped`` events on the ``runtime.faults`` topic (recorded, logged).

:class:`InProcessBus` hands the same message object to every subscriber (no copies).
:class:`RedisStreamsBus` delivers to subscribers in its own process the same way and sends a
topic over Redis Streams only when a subscriber lives in another process: ``XADD`` with ``MAXLEN
~`` (arrays as raw bytes with dtype/shape fields, no pickle) and one ``XREAD`` per wake-up for all
the topics this process reads, each at this process's own position in the stream. A message lost
to stream trimming shows up as a gap in the topic's sequence numbers and is counted as dropped.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterable

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.core.jsonutil import json_default
from cortexlink.core.types import Chunk

logger = logging.getLogger(__name__)

__all__ = ["Message", "Subscription", "Bus", "InProcessBus", "RedisStreamsBus", "BackPressureError",
           "POLICIES", "encode_message", "decode_message"]

POLICIES = ("block", "drop_oldest", "fail")


class BackPressureError(CortexlinkError, RuntimeError):
    """A bounded edge is full and its policy (``block`` after its timeout, or ``fail``) gives up."""


class Message:
    """One message on the bus.

    Attributes
    ----------
    topic : str
        ``"<node>.<port>"`` of the publisher.
    seq : int
        Sequence number of the message on its topic (0, 1, 2, ...); gaps mean losses.
    sample : int
        Source sample index the message refers to (a chunk's first sample, a bin's end sample).
    t_enter_ns : int
        ``time.monotonic_ns()`` when the source chunk behind this message entered the graph
        (0 when unknown). Comparable across processes on one host, not across hosts.
    payload : ndarray, Chunk, dict or None
        Treated as read-only by every receiver (arrays are shared, not copied, in-process).
    t_pub_ns : int
        ``time.monotonic_ns()`` when it was published (per-hop latency starts there).
    t_recv_ns : int
        When this process received it (Redis: after decoding; in-process: ``t_pub_ns``).
    """

    __slots__ = ("topic", "seq", "sample", "t_enter_ns", "payload", "t_pub_ns", "t_recv_ns")

    def __init__(self, topic: str, seq: int, sample: int, t_enter_ns: int, payload: Any,
                 t_pub_ns: int = 0, t_recv_ns: int = 0) -> None:
        self.topic = topic
        self.seq = seq
        self.sample = sample
        self.t_enter_ns = t_enter_ns
        self.payload = payload
        self.t_pub_ns = t_pub_ns
        self.t_recv_ns = t_recv_ns

    def __repr__(self) -> str:
        kind = type(self.payload).__name__
        return f"Message({self.topic!r}, seq={self.seq}, sample={self.sample}, payload={kind})"


class Subscription:
    """A bounded queue of messages of one topic for one consumer (one graph edge).

    Parameters
    ----------
    topic : str
    name : str
        The consumer, ``"<node>.<port>"``.
    maxlen : int
        Queue bound (>= 1).
    policy : {"block", "drop_oldest", "fail"}
    threaded : bool
        The consumer drains from another thread than the publisher's (enables waiting for
        ``policy="block"``).

    Attributes
    ----------
    n_received, n_dropped : int
        Messages accepted into the queue, messages dropped (overflow or transport gaps).
    """

    __slots__ = ("topic", "name", "maxlen", "policy", "threaded", "_q", "n_received", "n_dropped",
                 "overflowed", "last_seq", "on_drain", "_cond")

    def __init__(self, topic: str, name: str, maxlen: int = 256, policy: str = "drop_oldest", *,
                 threaded: bool = False) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ConfigError(f"maxlen of edge {topic} -> {name} must be an integer >= 1; got {maxlen!r}")
        if policy not in POLICIES:
            raise ConfigError(f"policy of edge {topic} -> {name} must be one of {POLICIES}; got {policy!r}")
        self.topic = topic
        self.name = name
        self.maxlen = maxlen
        self.policy = policy
        self.threaded = bool(threaded)
        self._q: collections.deque = collections.deque()
        self.n_received = 0
        self.n_dropped = 0
        self.overflowed = False
        self.last_seq = -1
        self.on_drain: Callable[[int], None] | None = None
        self._cond = threading.Condition() if threaded else None

    def __len__(self) -> int:
        return len(self._q)

    def offer(self, msg: Message, block_timeout_s: float = 1.0) -> bool:
        """Put ``msg`` in the queue under the edge's policy; False if it was dropped.

        Raises
        ------
        BackPressureError
            ``policy="block"`` and no room was made within ``block_timeout_s`` (or cannot be,
            the consumer being in this thread).
        """
        if self._cond is not None:
            with self._cond:
                return self._offer(msg, block_timeout_s)
        return self._offer(msg, block_timeout_s)

    def _offer(self, msg: Message, block_timeout_s: float) -> bool:
        q = self._q
        if len(q) >= self.maxlen:
            if self.policy == "drop_oldest":
                q.popleft()
                self.n_dropped += 1
            elif self.policy == "fail":
                self.n_dropped += 1
                self.overflowed = True
                return False
            else:  # block
                if self._cond is None:
                    self.n_dropped += 1
                    raise BackPressureError(
                        f"edge {self.topic} -> {self.name} (policy 'block', maxlen {self.maxlen}) is full and its "
                        f"consumer runs in the publisher's thread, so nobody can make room; raise maxlen")
                deadline = time.monotonic() + block_timeout_s
                while len(q) >= self.maxlen:        # the condition's lock is held (see offer)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.n_dropped += 1
                        raise BackPressureError(
                            f"edge {self.topic} -> {self.name} (policy 'block', maxlen {self.maxlen}) stayed "
                            f"full for {block_timeout_s:g} s")
                    self._cond.wait(left)
        q.append(msg)
        self.n_received += 1
        if msg.seq > self.last_seq:
            self.last_seq = msg.seq
        return True

    def note_gap(self, n_missing: int) -> None:
        """Count ``n_missing`` messages the transport lost before reaching this queue."""
        if n_missing > 0:
            self.n_dropped += n_missing
            if self.policy == "fail":
                self.overflowed = True

    def _check(self) -> None:
        if self.overflowed:
            self.overflowed = False
            raise BackPressureError(f"edge {self.topic} -> {self.name} (policy 'fail', maxlen {self.maxlen}) "
                                    f"overflowed: {self.n_dropped} message(s) dropped so far")

    def drain(self) -> list[Message]:
        """Remove and return every queued message, oldest first (an empty list if none).

        Raises
        ------
        BackPressureError
            ``policy="fail"`` and the queue overflowed since the last drain.
        """
        if self.overflowed:
            self._check()
        q = self._q
        if not q:
            return []
        if self._cond is not None:
            with self._cond:
                out = list(q)
                q.clear()
                self._cond.notify_all()
        else:
            out = list(q)
            q.clear()
        if self.on_drain is not None:
            self.on_drain(out[-1].seq)
        return out

    def pop(self) -> Message | None:
        """Remove and return the oldest message, or None."""
        if self.overflowed:
            self._check()
        if not self._q:
            return None
        if self._cond is not None:
            with self._cond:
                m = self._q.popleft()
                self._cond.notify_all()
        else:
            m = self._q.popleft()
        if self.on_drain is not None:
            self.on_drain(m.seq)
        return m

    def peek_last(self) -> Message | None:
        """The newest queued message without removing it (None when empty)."""
        return self._q[-1] if self._q else None

    def stats(self) -> dict:
        return {"topic": self.topic, "consumer": self.name, "maxlen": self.maxlen, "policy": self.policy,
                "queued": len(self._q), "n_received": self.n_received, "n_dropped": self.n_dropped}


class Bus:
    """Interface of a bus: topics, bounded subscriptions, node state and small shared values.

    Subclasses implement :meth:`publish`, :meth:`pump` and the key-value methods.
    """

    kind = "base"

    def __init__(self, *, block_timeout_s: float = 1.0) -> None:
        self.block_timeout_s = float(block_timeout_s)
        self._subs: dict[str, list[Subscription]] = collections.defaultdict(list)
        self._lazy: set[str] = set()

    # -- topics ---------------------------------------------------------------------------
    def subscribe(self, topic: str, name: str, *, maxlen: int = 256, policy: str = "drop_oldest",
                  threaded: bool = False, lazy: bool = False) -> Subscription:
        """A new bounded subscription of consumer ``name`` to ``topic``.

        ``lazy``: not urgent (e.g. collecting fault events); a Redis bus reads such topics only
        when :meth:`pump` is called with ``lazy=True``.
        """
        sub = Subscription(topic, name, maxlen, policy, threaded=threaded)
        self._subs[topic].append(sub)
        if lazy:
            self._lazy.add(topic)
        return sub

    @property
    def subscriptions(self) -> list[Subscription]:
        return [s for subs in self._subs.values() for s in subs]

    def advertise(self, topic: str, *, remote: bool = True, maxlen: int | None = None) -> None:
        """Declare that this process publishes ``topic`` (and whether other processes read it)."""

    def _deliver(self, msg: Message) -> None:
        subs = self._subs.get(msg.topic)
        if subs:
            bt = self.block_timeout_s
            for s in subs:
                s.offer(msg, bt)

    def publish(self, msg: Message) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def pump(self, timeout_s: float = 0.0, *, lazy: bool = False) -> int:
        """Fetch messages from other processes into local subscriptions, waiting up to
        ``timeout_s`` for the first; return how many arrived (in-process: sleeps, returns 0).
        ``lazy``: also (or, with no wait, only) read the topics subscribed with ``lazy=True``."""
        if timeout_s > 0:
            time.sleep(timeout_s)
        return 0

    # -- shared state -----------------------------------------------------------------------
    def set_info(self, key: str, value: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def get_info(self, key: str) -> dict | None:  # pragma: no cover - interface
        raise NotImplementedError

    def set_state(self, node: str, info: dict, *, wait: bool = True) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def states(self) -> dict[str, dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def heartbeat(self, node: str, n_out: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def heartbeats(self) -> dict[str, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def request_stop(self, reason: str = "") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop_requested(self) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def poll_stop(self) -> str | None:
        """Like :meth:`stop_requested`, but may answer from the last poll (no wait on the hot
        path): a stop is seen within one housekeeping period more."""
        return self.stop_requested()

    def close(self) -> None:
        """Release connections (idempotent)."""


class InProcessBus(Bus):
    """The default bus: every node in one process; messages are passed by reference.

    Parameters
    ----------
    block_timeout_s : float
        Longest wait of a publisher on a full ``block`` edge whose consumer is in another thread.
    """

    kind = "inprocess"

    def __init__(self, *, block_timeout_s: float = 1.0) -> None:
        super().__init__(block_timeout_s=block_timeout_s)
        self._info: dict[str, dict] = {}
        self._states: dict[str, dict] = {}
        self._hb: dict[str, int] = {}
        self._stop: str | None = None

    def publish(self, msg: Message) -> None:
        """Deliver ``msg`` to every subscription of its topic (the same object to each)."""
        if not msg.t_pub_ns:
            msg.t_pub_ns = time.monotonic_ns()
        msg.t_recv_ns = msg.t_pub_ns
        self._deliver(msg)

    def set_info(self, key: str, value: dict) -> None:
        self._info[key] = value

    def get_info(self, key: str) -> dict | None:
        return self._info.get(key)

    def set_state(self, node: str, info: dict, *, wait: bool = True) -> None:
        self._states[node] = info

    def states(self) -> dict[str, dict]:
        return dict(self._states)

    def heartbeat(self, node: str, n_out: int) -> None:
        self._hb[node] = n_out

    def heartbeats(self) -> dict[str, int]:
        return dict(self._hb)

    def request_stop(self, reason: str = "") -> None:
        if self._stop is None:
            self._stop = reason or "stop requested"

    def stop_requested(self) -> str | None:
        return self._stop


# ---------------------------------------------------------------------------------- codec
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


def encode_message(msg: Message) -> dict[bytes, Any]:
    """Redis stream fields of ``msg``: integers as text, arrays as raw bytes with dtype and
    shape, other dict values as JSON (no pickle)."""
    p = msg.payload
    f: dict[bytes, Any] = {b"q": msg.seq, b"s": msg.sample, b"e": msg.t_enter_ns, b"p": msg.t_pub_ns}
    if p is None:
        f[b"k"] = b"n"
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
    elif isinstance(p, dict):
        f[b"k"] = b"d"
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
    else:
        raise TypeError(f"cannot send a {type(p).__name__} payload over Redis (ndarray, Chunk, dict or None)")
    return f


def _array(buf: bytes, dtype: str, shape: Iterable[int]) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if not buf:
        return np.zeros(shape, dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def decode_message(topic: str, f: dict[bytes, bytes]) -> Message:
    """Inverse of :func:`encode_message` (arrays are read-only views of the received bytes)."""
    kind = f[b"k"]
    if kind == b"c":
        shape = f[b"sh"].split(b",")
        data = _array(f[b"x"], f[b"dt"].decode(), shape)
        payload: Any = Chunk(data, float(f[b"fs"]), int(f[b"ss"]), int(f[b"ht"]), int(f[b"cs"]))
    elif kind == b"a":
        shape = [s for s in f[b"sh"].split(b",") if s]
        payload = _array(f[b"x"], f[b"dt"].decode(), shape)
    elif kind == b"d":
        payload = json.loads(f[b"j"])
        arrays = payload.pop("__arrays__", None)
        if arrays:
            for k, (dt, shape) in arrays.items():
                payload[k] = _array(f[("a:" + k).encode()], dt, shape)
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


class AsyncLink:
    """A second connection to the same Redis server for writes the hot path must not wait on.

    :meth:`send` writes a command and returns at once; the replies are read later, in order,
    when they have arrived (:meth:`poll`, which the bus calls before it waits for input) or all
    at once (:meth:`sync`). A reply that is an error is raised by the call that reads it, so a failed
    ``XADD`` is never silent, only reported a little later. At most ``max_pending`` replies
    are left unread; beyond that :meth:`send` waits for the oldest.

    Each command may name a callback that receives its reply (the health poll of the runner
    reads node states this way without a round trip on the hot path).
    """

    def __init__(self, client: Any, max_pending: int = 256) -> None:
        import redis

        cp = client.connection_pool
        self._pool = redis.ConnectionPool(connection_class=cp.connection_class, **cp.connection_kwargs)
        self._conn = self._pool.get_connection()
        self._pending: collections.deque = collections.deque()
        self.max_pending = int(max_pending)
        self.n_sent = 0

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def send(self, *args: Any, on_reply: Callable[[Any], None] | None = None) -> None:
        """Write one command (``"XADD", key, ...``) without waiting for its reply (replies are
        read by :meth:`poll`, which the bus calls while it waits anyway)."""
        while len(self._pending) >= self.max_pending:
            self._read_one()
        self._conn.send_packed_command(pack_command(args), check_health=False)
        self._pending.append(on_reply)
        self.n_sent += 1

    def _read_one(self) -> None:
        cb = self._pending.popleft()
        reply = self._conn.read_response()
        if cb is not None:
            cb(reply)

    def poll(self) -> int:
        """Read the replies that have already arrived (never waits); return how many."""
        n = 0
        conn = self._conn
        while self._pending and conn.can_read(timeout=0):
            self._read_one()
            n += 1
        return n

    def sync(self) -> None:
        """Wait for every outstanding reply (before a stop, at the end of a run)."""
        while self._pending:
            self._read_one()

    def close(self) -> None:
        try:
            self._pool.disconnect()
        except Exception:  # pragma: no cover - best effort
            logger.debug("closing the async redis link failed", exc_info=True)


def _as_dict(reply: Any) -> dict:
    """An ``HGETALL`` reply as a dict (RESP3 parsers give a dict, RESP2 ones a flat list)."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply or ())
    return dict(zip(it, it))


class RedisStreamsBus(Bus):
    """A bus over Redis Streams for nodes in several processes or on several hosts.

    Topics published and read in this process are delivered locally by reference, like
    :class:`InProcessBus`; a topic is also appended to its Redis stream (``XADD MAXLEN ~``) when
    :meth:`advertise` says that another process reads it (the default for topics never
    advertised). Topics this process subscribes to but does not publish are read from Redis by
    :meth:`pump` with one ``XREAD`` for all of them.

    Parameters
    ----------
    client : redis.Redis
        A client with ``decode_responses=False`` and a socket timeout above the longest ``XREAD``
        block (see :func:`cortexlink.runtime.redis_server.connect`).
    run_id : str
        Namespace of this run's keys: ``cl:<run_id>:...``.
    stream_maxlen : int
        Default approximate bound of a stream (``MAXLEN ~``) for topics advertised without one.
    block_timeout_s : float
        Longest wait of a publisher on a full ``block`` edge.
    start_at_end : bool
        Read only messages added after the first :meth:`pump` (a restarted process) instead of
        everything still in the streams.
    """

    kind = "redis"

    def __init__(self, client: Any, run_id: str, *, stream_maxlen: int = 10000, block_timeout_s: float = 1.0,
                 start_at_end: bool = False) -> None:
        super().__init__(block_timeout_s=block_timeout_s)
        if not run_id or any(c in run_id for c in " :\n"):
            raise ConfigError(f"run_id must be a non-empty string without spaces or ':'; got {run_id!r}")
        self._r = client
        self.run_id = run_id
        self.prefix = f"cl:{run_id}:"
        self.stream_maxlen = int(stream_maxlen)
        self._produced: set[str] = set()
        self._export: dict[str, int] = {}       # topic -> MAXLEN ~ of its stream (sent to Redis)
        self._local_only: set[str] = set()
        self._pos: dict[str, bytes] = {}        # topic -> last stream id read by this process
        self._last_seq: dict[str, int] = {}
        self._start_at_end = start_at_end
        self._block_edges: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
        self._acked: dict[tuple[str, str], int] = {}
        self._shared: set[str] = set()
        self._hb_pending: dict[str, int] = {}
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.n_xadd = 0
        self.n_xread = 0
        self._link: AsyncLink | None = None
        self._health: tuple[int, dict, dict] | None = None   # (t_ns, states, heartbeats) of the last poll
        self._health_wait = False
        self._stop_seen: str | None = None
        self._stop_wait = False

    @property
    def link(self) -> AsyncLink:
        """The connection for writes nobody waits on (``XADD``, heartbeats, states, acks),
        opened on first use."""
        if self._link is None:
            self._link = AsyncLink(self._r)
        return self._link

    def sync(self) -> None:
        """Wait until Redis has acknowledged every write sent so far (raises a write's error)."""
        if self._link is not None:
            self._link.sync()

    # -- keys ---------------------------------------------------------------------------
    def stream_key(self, topic: str) -> str:
        return self.prefix + "s:" + topic

    def _ack_key(self, topic: str, consumer: str) -> str:
        return self.prefix + "ack:" + topic + ":" + consumer

    # -- topics -------------------------------------------------------------------------
    def advertise(self, topic: str, *, remote: bool = True, maxlen: int | None = None) -> None:
        """This process publishes ``topic``; ``remote``: some reader lives in another process
        (then the stream keeps about ``maxlen`` messages, default ``stream_maxlen``)."""
        self._produced.add(topic)
        if remote:
            self._export[topic] = int(maxlen or self.stream_maxlen)
            self._local_only.discard(topic)
        else:
            self._export.pop(topic, None)
            self._local_only.add(topic)

    def advertise_shared(self, topic: str, *, maxlen: int | None = None) -> None:
        """A topic that several processes publish (fault events): each process sends its own
        messages to the stream and reads everyone else's."""
        self._shared.add(topic)
        self._export[topic] = int(maxlen or self.stream_maxlen)

    def declare_remote_edge(self, topic: str, consumer: str, maxlen: int, policy: str) -> None:
        """Publisher side of an edge to another process: ``block`` edges are honoured here by
        waiting on the consumer's acknowledged sequence number."""
        if policy == "block":
            self._block_edges[topic].append((consumer, int(maxlen)))
            self._acked[(topic, consumer)] = -1

    def subscribe(self, topic: str, name: str, *, maxlen: int = 256, policy: str = "drop_oldest",
                  threaded: bool = False, lazy: bool = False) -> Subscription:
        sub = super().subscribe(topic, name, maxlen=maxlen, policy=policy, threaded=threaded, lazy=lazy)
        if topic not in self._produced and policy == "block":
            key = self._ack_key(topic, name)
            sub.on_drain = lambda seq, _k=key: self.link.send(b"SET", _k, seq)
        return sub

    def _remote_topics(self, lazy: bool = False) -> list[str]:
        return [t for t in self._subs if (t not in self._produced or t in self._shared)
                and (lazy or t not in self._lazy)]

    @property
    def has_remote_inputs(self) -> bool:
        """True when :meth:`pump` reads at least one stream."""
        return bool(self._remote_topics())

    def publish(self, msg: Message) -> None:
        """Deliver locally; ``XADD`` when another process reads the topic."""
        if not msg.t_pub_ns:
            msg.t_pub_ns = time.monotonic_ns()
        msg.t_recv_ns = msg.t_pub_ns
        topic = msg.topic
        if topic not in self._produced and topic not in self._shared:
            self.advertise(topic)
        self._deliver(msg)
        maxlen = self._export.get(topic)
        if maxlen is None:
            return
        edges = self._block_edges.get(topic)
        if edges:
            self._wait_for_room(topic, msg.seq, edges)
        fields = encode_message(msg)
        if topic in self._shared:
            fields[b"o"] = self.origin
        args = [b"XADD", self.stream_key(topic), b"MAXLEN", b"~", maxlen, b"*"]
        for k, v in fields.items():
            args.append(k)
            args.append(v)
        self.link.send(*args)
        if self._hb_pending:
            self._send_heartbeats()
        self.n_xadd += 1

    def _wait_for_room(self, topic: str, seq: int, edges: list[tuple[str, int]]) -> None:
        deadline = None
        for consumer, maxlen in edges:
            k = (topic, consumer)
            while seq - self._acked[k] > maxlen:
                got = self._r.get(self._ack_key(topic, consumer))
                self._acked[k] = -1 if got is None else int(got)
                if seq - self._acked[k] <= maxlen:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.block_timeout_s
                elif now >= deadline:
                    raise BackPressureError(
                        f"edge {topic} -> {consumer} (policy 'block', maxlen {maxlen}) stayed full for "
                        f"{self.block_timeout_s:g} s (consumer acknowledged seq {self._acked[k]}, publishing {seq})")
                time.sleep(0.0002)

    def pump(self, timeout_s: float = 0.0, *, lazy: bool = False) -> int:
        """``XREAD`` every topic this process reads but does not publish, blocking up to
        ``timeout_s`` (whole milliseconds, then the server's ``hz`` granularity; under 1 ms: a
        non-blocking read, then a sleep) for the first message, and deliver what arrived to the
        local subscriptions. Lazy topics are read only with ``lazy=True``."""
        if self._link is not None and self._link.n_pending:
            self._link.poll()
        topics = self._remote_topics(lazy)
        if not topics:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return 0
        streams = {}
        for t in topics:
            pos = self._pos.get(t)
            if pos is None:
                pos = b"$" if self._start_at_end else b"0-0"
                if self._start_at_end:
                    last = self._r.xrevrange(self.stream_key(t), count=1)
                    pos = last[0][0] if last else b"0-0"
                self._pos[t] = pos
            streams[self.stream_key(t)] = pos
        block_ms = int(timeout_s * 1000.0)
        reply = self._xread(streams, block_ms if block_ms >= 1 else None)
        self.n_xread += 1
        if not reply:
            if 0 < timeout_s < 0.001:
                time.sleep(timeout_s)
            return 0
        n = 0
        plen = len(self.prefix) + 2
        now = time.monotonic_ns()
        for key, entries in reply:
            topic = (key.decode() if isinstance(key, bytes) else key)[plen:]
            subs = self._subs.get(topic, ())
            shared = topic in self._shared
            last = self._last_seq.get(topic)
            for eid, fields in entries:
                self._pos[topic] = eid
                if shared:
                    origin = fields.get(b"o", b"").decode()
                    if origin == self.origin:
                        continue
                    msg = decode_message(topic, fields)
                    msg.t_recv_ns = now
                    for s in subs:
                        s.offer(msg, self.block_timeout_s)
                    n += 1
                    continue
                msg = decode_message(topic, fields)
                msg.t_recv_ns = now
                if last is not None and msg.seq > last + 1:
                    for s in subs:
                        s.note_gap(msg.seq - last - 1)
                last = msg.seq
                for s in subs:
                    s.offer(msg, self.block_timeout_s)
                n += 1
            self._last_seq[topic] = last
        return n

    def _xread(self, streams: dict[str, bytes], block_ms: int | None) -> list:
        """``XREAD`` straight on the client's own connection (redis-py's command layer and reply
        callbacks cost tens of microseconds per call on the hot path); the reply as
        ``[(key, [(id, {field: value}), ...]), ...]``, empty on timeout."""
        conn = getattr(self._r, "connection", None)
        if conn is None:                # a pooled client: the ordinary call
            return self._r.xread(streams, count=1000, block=block_ms) or []
        args: list[Any] = [b"XREAD", b"COUNT", 1000]
        if block_ms is not None:
            args += [b"BLOCK", block_ms]
        args.append(b"STREAMS")
        args.extend(streams)
        args.extend(streams.values())
        conn.send_packed_command(pack_command(args), check_health=False)
        raw = conn.read_response()
        if not raw:
            return []
        items = raw.items() if isinstance(raw, dict) else raw
        out = []
        for key, entries in items:
            out.append((key, [(eid, _as_dict(flat)) for eid, flat in entries]))
        return out

    # -- shared state -------------------------------------------------------------------
    def set_info(self, key: str, value: dict) -> None:
        self._r.set(self.prefix + "info:" + key, json.dumps(value, default=_json_default))

    def get_info(self, key: str) -> dict | None:
        got = self._r.get(self.prefix + "info:" + key)
        return None if got is None else json.loads(got)

    def set_state(self, node: str, info: dict, *, wait: bool = True) -> None:
        """Publish a node's state; ``wait=False``: without waiting for the reply (hot path)."""
        value = json.dumps(info, default=_json_default)
        if wait:
            self._r.hset(self.prefix + "state", node, value)
        else:
            self.link.send(b"HSET", self.prefix + "state", node, value)

    def states(self) -> dict[str, dict]:
        got = self._r.hgetall(self.prefix + "state")
        return {k.decode(): json.loads(v) for k, v in got.items()}

    def heartbeat(self, node: str, n_out: int) -> None:
        """Buffered: sent with the next ``XADD`` (one round trip), or by :meth:`flush`."""
        self._hb_pending[node] = int(n_out)

    def flush(self) -> None:
        """Send buffered heartbeats now (without waiting for the reply) and read the replies
        that have arrived."""
        if self._hb_pending:
            self._send_heartbeats()
        if self._link is not None:
            self._link.poll()

    def _send_heartbeats(self) -> None:
        args: list[Any] = [b"HSET", self.prefix + "hb"]
        for k, v in self._hb_pending.items():
            args.append(k)
            args.append(v)
        self._hb_pending = {}
        self.link.send(*args)

    def heartbeats(self) -> dict[str, int]:
        got = self._r.hgetall(self.prefix + "hb")
        return {k.decode(): int(v) for k, v in got.items()}

    def poll_health(self, max_age_ns: int) -> tuple[int, dict[str, dict], dict[str, int]] | None:
        """Node states and heartbeats without a round trip on the caller's path: when the last
        snapshot is older than ``max_age_ns`` and none is on its way, ask for a new one; return
        the newest snapshot that has arrived, ``(t_ns, states, heartbeats)`` with ``t_ns`` the
        time it was asked for, or None before the first."""
        now = time.monotonic_ns()
        link = self.link
        if link.n_pending:
            link.poll()
        if not self._health_wait and (self._health is None or now - self._health[0] >= max_age_ns):
            self._health_wait = True
            got: dict[str, Any] = {}

            def states(reply: Any) -> None:
                got["st"] = {k.decode(): json.loads(v) for k, v in _as_dict(reply).items()}

            def beats(reply: Any, _t: int = now) -> None:
                hb = {k.decode(): int(v) for k, v in _as_dict(reply).items()}
                self._health = (_t, got.get("st", {}), hb)
                self._health_wait = False

            link.send(b"HGETALL", self.prefix + "state", on_reply=states)
            link.send(b"HGETALL", self.prefix + "hb", on_reply=beats)
        return self._health

    def request_stop(self, reason: str = "") -> None:
        self.sync()            # every message sent before the stop is in Redis before it
        self._r.set(self.prefix + "stop", reason or "stop requested", nx=True)

    def stop_requested(self) -> str | None:
        got = self._r.get(self.prefix + "stop")
        return None if got is None else got.decode()

    def poll_stop(self) -> str | None:
        """The stop reason once the main process has set it, or once the run's keys are gone
        (the main process ended and cleaned up before this poll saw its stop)."""
        if self._stop_seen is None and not self._stop_wait:
            self._stop_wait = True

            def got(reply: Any) -> None:
                if reply is not None:
                    self._stop_seen = reply.decode() if isinstance(reply, bytes) else str(reply)

            def graph_exists(reply: Any) -> None:
                self._stop_wait = False
                if not reply and self._stop_seen is None:
                    self._stop_seen = "the run's keys are gone (its main process has ended)"

            self.link.send(b"GET", self.prefix + "stop", on_reply=got)
            self.link.send(b"EXISTS", self.prefix + "graph", on_reply=graph_exists)
        elif self._link is not None and self._link.n_pending:
            self._link.poll()
        return self._stop_seen

    def delete_run(self) -> None:
        """Delete every key of this run (streams, state, info)."""
        keys = list(self._r.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self._r.delete(*keys[i:i + 500])

    def close(self) -> None:
        if self._link is not None:
            try:
                self._link.sync()
            except Exception:
                logger.warning("writes to Redis were still unacknowledged at close", exc_info=True)
            self._link.close()
            self._link = None
        try:
            self._r.close()
        except Exception:  # pragma: no cover - best effort
            logger.debug("closing the redis client failed", exc_info=True)
