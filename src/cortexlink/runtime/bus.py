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
:class:`~cortexlink.runtime.redis_bus.RedisStreamsBus` (its own module, with the wire format in
:mod:`cortexlink.runtime.wire`) delivers to subscribers in its own process the same way and sends a
topic over Redis Streams only when a subscriber lives in another process: ``XADD`` with ``MAXLEN
~`` (arrays as raw bytes with dtype/shape fields, no pickle) and one ``XREAD`` per wake-up for all
the topics this process reads, each at this process's own position in the stream. A message lost
to stream trimming shows up as a gap in the topic's sequence numbers and is counted as dropped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from cortexlink.core.errors import ConfigError, CortexlinkError

logger = logging.getLogger(__name__)

__all__ = ["Message", "Subscription", "Bus", "InProcessBus", "BackPressureError", "POLICIES"]

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
                 "overflowed", "last_seq", "on_drain", "_cond", "resume_after")

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
        #: Messages with ``seq`` up to this are skipped (already applied before a process restart;
        #: see :mod:`cortexlink.runtime.journal`).
        self.resume_after = -1

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
        if msg.seq <= self.resume_after:
            return False
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
    #: None while the bus works; else what broke it (a lost Redis server: see
    #: :mod:`cortexlink.runtime.redis_bus`). An in-process bus never breaks.
    broken: str | None = None

    def __init__(self, *, block_timeout_s: float = 1.0) -> None:
        self.block_timeout_s = float(block_timeout_s)
        self._subs: dict[str, list[Subscription]] = collections.defaultdict(list)
        self._lazy: set[str] = set()

    # -- topics ---------------------------------------------------------------------------
    def subscribe(self, topic: str, name: str, *, maxlen: int = 256, policy: str = "drop_oldest",
                  threaded: bool = False, lazy: bool = False, from_start: bool = False) -> Subscription:
        """A new bounded subscription of consumer ``name`` to ``topic``.

        ``lazy``: not urgent (e.g. collecting fault events); a Redis bus reads such topics only
        when :meth:`pump` is called with ``lazy=True``. ``from_start``: a Redis bus of a restarted
        process reads this topic from the start of its stream (in-process: no effect).
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
