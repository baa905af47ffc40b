"""The Redis Streams bus: nodes in several processes (or hosts) exchange messages through a
Redis server (see :mod:`cortexlink.runtime.bus` for subscriptions and back-pressure, and
:mod:`cortexlink.runtime.wire` for the message format).

A lost server breaks the bus, it does not crash the process: the first Redis or socket error
(the server killed, stopped or restarted, a refused write) sets :attr:`RedisStreamsBus.broken`
to a description of it, and from then on the bus delivers this process's messages to its own
subscribers only and answers every read as empty — it never reconnects, since a server that
comes back has lost the run's streams and state. The runner turns a broken bus into a
``bus_lost`` fault: the cursor is halted and the run ends with its summary
(:mod:`cortexlink.runtime.lifecycle`).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import time
import uuid
from typing import Any, Callable

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import Chunk
from cortexlink.runtime.bus import BackPressureError, Bus, Message, Subscription
from cortexlink.runtime.chunk_codec import DEFAULT_RESYNC_FRAMES, ChunkCodecs
from cortexlink.runtime.wire import _json_default, decode_message, encode_message, pack_command

logger = logging.getLogger("cortexlink.runtime.bus")


def _bus_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.RedisError, OSError)


def _guarded(default: Any = None) -> Callable:
    """A method that talks to Redis: a Redis or socket error breaks the bus (see the module
    docstring) instead of propagating, and once broken the method answers ``default`` (called
    with the method's arguments when callable) without trying."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self: "RedisStreamsBus", *a: Any, **kw: Any) -> Any:
            if self.broken is None:
                try:
                    return fn(self, *a, **kw)
                except _bus_errors() as exc:
                    self._break(exc, fn.__name__)
            return default(self, *a, **kw) if callable(default) else default

        return wrapper

    return deco

__all__ = ["RedisStreamsBus", "AsyncLink"]


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
    chunk_codec : {"none", "rice", "range", "lms", "lms-fast"}
        Send int16 chunks this process publishes as frames of the lossless codec (per topic,
        a resynchronisation point every ``chunk_codec_resync`` chunks). Any reader decodes them;
        one that cannot (it joined late, or entries were trimmed) counts each lost chunk as a gap
        and decodes again from the next resynchronisation point (:mod:`.chunk_codec`).
    """

    kind = "redis"

    def __init__(self, client: Any, run_id: str, *, stream_maxlen: int = 10000, block_timeout_s: float = 1.0,
                 start_at_end: bool = False, chunk_codec: str = "none",
                 chunk_codec_resync: int = DEFAULT_RESYNC_FRAMES) -> None:
        super().__init__(block_timeout_s=block_timeout_s)
        #: per-topic encoders and decoders of compressed chunks, with their counters
        self.codecs = ChunkCodecs(chunk_codec, chunk_codec_resync)
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
        self._from_start: set[str] = set()
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
        #: None while Redis answers; else what broke the bus (see the module docstring).
        self.broken: str | None = None
        #: Messages that could not be sent to other processes once the bus was broken.
        self.n_unsent = 0

    def _break(self, exc: BaseException, where: str) -> None:
        if self.broken is None:
            self.broken = f"{type(exc).__name__}: {exc}"
            logger.error("the Redis bus is broken (%s, in %s): messages now stay in this process",
                         self.broken, where)

    @property
    def link(self) -> AsyncLink:
        """The connection for writes nobody waits on (``XADD``, heartbeats, states, acks),
        opened on first use."""
        if self._link is None:
            self._link = AsyncLink(self._r)
        return self._link

    @_guarded()
    def sync(self) -> None:
        """Wait until Redis has acknowledged every write sent so far (a write's error breaks the bus)."""
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
                  threaded: bool = False, lazy: bool = False, from_start: bool = False) -> Subscription:
        """``from_start``: read the topic's stream from its beginning even in a restarted process
        (``start_at_end``): a ``replay`` input (see :mod:`cortexlink.runtime.journal`)."""
        sub = super().subscribe(topic, name, maxlen=maxlen, policy=policy, threaded=threaded, lazy=lazy)
        if from_start:
            self._from_start.add(topic)
        if topic not in self._produced and policy == "block":
            key = self._ack_key(topic, name)
            sub.on_drain = lambda seq, _k=key: self._ack(_k, seq)
        return sub

    @_guarded()
    def _ack(self, key: str, seq: int) -> None:
        self.link.send(b"SET", key, seq)

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
        if self.broken is not None:
            self.n_unsent += 1
            return
        self._send(msg, topic, maxlen)

    @_guarded()
    def _send(self, msg: Message, topic: str, maxlen: int) -> None:
        edges = self._block_edges.get(topic)
        if edges:
            self._wait_for_room(topic, msg.seq, edges)
        p = msg.payload
        frame = self.codecs.encode(topic, p.data) if (self.codecs.enabled and isinstance(p, Chunk)
                                                     and topic not in self._shared) else None
        fields = encode_message(msg, frame)
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
        local subscriptions. Lazy topics are read only with ``lazy=True``. Once the bus is broken:
        sleeps ``timeout_s`` and returns 0."""
        if self.broken is None:
            try:
                return self._pump(timeout_s, lazy)
            except _bus_errors() as exc:
                self._break(exc, "pump")
                return 0
        if timeout_s > 0:
            time.sleep(timeout_s)
        return 0

    def _pump(self, timeout_s: float, lazy: bool) -> int:
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
                pos = b"$" if self._start_at_end and t not in self._from_start else b"0-0"
                if pos == b"$":
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
                data = None
                if fields[b"k"] == b"z":
                    data = self.codecs.decode(topic, fields[b"x"])
                    if data is None:        # depends on a frame this reader lacks: a gap, counted
                        seq = int(fields[b"q"])
                        for s in subs:
                            s.note_gap(seq - last if last is not None and seq > last else 1)
                        last = seq
                        continue
                msg = decode_message(topic, fields, data)
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
    @_guarded()
    def set_info(self, key: str, value: dict) -> None:
        self._r.set(self.prefix + "info:" + key, json.dumps(value, default=_json_default))

    @_guarded()
    def get_info(self, key: str) -> dict | None:
        got = self._r.get(self.prefix + "info:" + key)
        return None if got is None else json.loads(got)

    @_guarded()
    def set_state(self, node: str, info: dict, *, wait: bool = True) -> None:
        """Publish a node's state; ``wait=False``: without waiting for the reply (hot path)."""
        value = json.dumps(info, default=_json_default)
        if wait:
            self._r.hset(self.prefix + "state", node, value)
        else:
            self.link.send(b"HSET", self.prefix + "state", node, value)

    @_guarded(default=lambda self: {})
    def states(self) -> dict[str, dict]:
        got = self._r.hgetall(self.prefix + "state")
        return {k.decode(): json.loads(v) for k, v in got.items()}

    def heartbeat(self, node: str, n_out: int) -> None:
        """Buffered: sent with the next ``XADD`` (one round trip), or by :meth:`flush`."""
        self._hb_pending[node] = int(n_out)

    @_guarded()
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

    @_guarded(default=lambda self: {})
    def heartbeats(self) -> dict[str, int]:
        got = self._r.hgetall(self.prefix + "hb")
        return {k.decode(): int(v) for k, v in got.items()}

    @_guarded(default=lambda self, *a, **kw: self._health)
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

    # -- journals (runtime.journal) -------------------------------------------------------------
    @_guarded()
    def journal_append(self, key: str, fields: dict[bytes, Any]) -> None:
        args: list[Any] = [b"XADD", key, b"*"]
        for k, v in fields.items():
            args.append(k)
            args.append(v)
        self.link.send(*args)

    @_guarded(default=lambda self, key: [])
    def journal_read(self, key: str) -> list[dict[bytes, bytes]]:
        self.sync()
        out: list[dict[bytes, bytes]] = []
        start = b"-"
        while True:
            got = self._r.xrange(key, min=start, count=1000)
            out.extend(dict(f) for _, f in got)
            if len(got) < 1000:
                return out
            start = b"(" + got[-1][0]

    @_guarded()
    def request_stop(self, reason: str = "") -> None:
        self.sync()            # every message sent before the stop is in Redis before it
        self._r.set(self.prefix + "stop", reason or "stop requested", nx=True)

    @_guarded()
    def stop_requested(self) -> str | None:
        got = self._r.get(self.prefix + "stop")
        return None if got is None else got.decode()

    @_guarded()
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

    @_guarded()
    def delete_run(self) -> None:
        """Delete every key of this run (streams, state, info)."""
        keys = list(self._r.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self._r.delete(*keys[i:i + 500])

    def close(self) -> None:
        if self._link is not None:
            if self.broken is None:
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
