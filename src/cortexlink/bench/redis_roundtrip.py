"""Latency of Redis Streams on loopback for the bus's two message sizes.

Measures, on a private ``redis-server`` started by
:class:`~cortexlink.runtime.redis_server.RedisServer` (persistence off):

``ping``
    One ``PING`` round trip (the floor for any request through redis-py).

``xadd_xread``
    One client: ``XADD`` a message, then ``XREAD`` it back (two request/reply
    round trips, no other process involved).
``one_way``
    ``XADD`` in this process until a consumer *process* blocked in
    ``XREAD BLOCK`` has the message (``time.monotonic_ns`` is system-wide).
``ping_pong``
    ``XADD`` → consumer process ``XREAD`` → consumer ``XADD`` to a reply stream
    → this process's ``XREAD BLOCK`` returns: a full hop there and back.

Payloads: a raw chunk of 1024 channels x 30 samples int16 (61,440 bytes, 1 ms at
30 kHz) and a small intent-sized message (vx, vy, click as float32 + an int64
sample index). Returns a dict (JSON-ready); nothing is printed here.

Example::

    python -c "import json; from cortexlink.bench.redis_roundtrip import run; \
print(json.dumps(run(), indent=1))"
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from typing import Any

import numpy as np

__all__ = ["run", "payloads", "run_bus_chunks"]

STREAM = "bench:redis_roundtrip:data"
REPLY = "bench:redis_roundtrip:reply"
MAXLEN = 1000


def payloads() -> dict[str, bytes]:
    """The two message bodies: ``chunk_1024x30_int16`` and ``intent_small``."""
    rng = np.random.default_rng(0)
    chunk = rng.integers(-2000, 2000, size=(30, 1024), dtype=np.int16).tobytes()
    small = np.array([0.1, -0.2, 0.9], np.float32).tobytes() + np.int64(123456).tobytes()
    return {"chunk_1024x30_int16": chunk, "intent_small": small}


def _stats_us(ns: np.ndarray) -> dict[str, float]:
    us = ns.astype(np.float64) / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max()),
            "mean_us": float(us.mean()), "n": int(us.size)}


def _consumer(url: str, n_total: int, ready: Any, out: Any) -> None:
    """Consumer process: read each message, stamp its arrival, echo an ack."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=30)
    last = "$"
    recv_ns = np.zeros(n_total, np.int64)
    sent_ns = np.zeros(n_total, np.int64)
    ready.set()
    for i in range(n_total):
        got = r.xread({STREAM: last}, count=1, block=10_000)
        t = time.monotonic_ns()
        if not got:
            break
        (_, entries), = got
        last, fields = entries[0]
        recv_ns[i] = t
        sent_ns[i] = int(fields[b"t_ns"])
        r.xadd(REPLY, {"i": i}, maxlen=MAXLEN, approximate=True)
    out.put((recv_ns - sent_ns).tolist())
    r.close()


def _xadd_xread(r: Any, body: bytes, n_iter: int, n_warmup: int) -> np.ndarray:
    key = STREAM + ":seq"
    r.delete(key)
    last = "0-0"
    dt = np.zeros(n_iter, np.int64)
    for i in range(n_warmup + n_iter):
        t0 = time.monotonic_ns()
        msg_id = r.xadd(key, {"data": body, "seq": i}, maxlen=MAXLEN, approximate=True)
        got = r.xread({key: last}, count=1)
        t1 = time.monotonic_ns()
        last = got[0][1][0][0]
        if last != msg_id:
            raise RuntimeError(f"read back {last!r}, expected {msg_id!r}")
        if i >= n_warmup:
            dt[i - n_warmup] = t1 - t0
    r.delete(key)
    return dt


def _ping_pong(r: Any, url: str, body: bytes, n_iter: int, n_warmup: int) -> tuple[np.ndarray, np.ndarray]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    r.delete(STREAM, REPLY)
    n_total = n_warmup + n_iter
    proc = ctx.Process(target=_consumer, args=(url, n_total, ready, out), daemon=True)
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("consumer process did not start within 30 s")
        time.sleep(0.2)  # let its first XREAD BLOCK reach the server
        reply_last = "0-0"
        rtt = np.zeros(n_total, np.int64)
        for i in range(n_total):
            t0 = time.monotonic_ns()
            r.xadd(STREAM, {"data": body, "t_ns": t0}, maxlen=MAXLEN, approximate=True)
            got = r.xread({REPLY: reply_last}, count=1, block=10_000)
            t1 = time.monotonic_ns()
            if not got:
                raise RuntimeError(f"no reply to message {i} within 10 s")
            reply_last = got[0][1][0][0]
            rtt[i] = t1 - t0
        one_way = np.asarray(out.get(timeout=30), np.int64)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    r.delete(STREAM, REPLY)
    return one_way[n_warmup:], rtt[n_warmup:]


def run(n_iter: int = 5000, n_warmup: int = 200) -> dict:
    """Measure the three latencies for both payloads on a private server.

    Parameters
    ----------
    n_iter : int
        Timed iterations per measurement.
    n_warmup : int
        Untimed iterations first.

    Returns
    -------
    dict
        ``{"machine": ..., "redis": ..., "results": {payload: {kind: stats}}}``
        with p50/p90/p99/max/mean in microseconds.
    """
    import redis

    from cortexlink.runtime.redis_server import RedisServer, tuned_for_latency

    out: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "redis_py": redis.__version__, "n_iter": n_iter, "n_warmup": n_warmup, "results": {},
    }
    with RedisServer() as srv:
        r = srv.client(socket_timeout=30)
        try:
            out["redis"] = r.info("server")["redis_version"]
            out["tuning"] = tuned_for_latency(r)
            ping = np.zeros(n_iter, np.int64)
            for i in range(n_warmup + n_iter):
                t0 = time.monotonic_ns()
                r.ping()
                if i >= n_warmup:
                    ping[i - n_warmup] = time.monotonic_ns() - t0
            out["ping"] = _stats_us(ping)
            for name, body in payloads().items():
                res = {"payload_bytes": len(body)}
                res["xadd_xread"] = _stats_us(_xadd_xread(r, body, n_iter, n_warmup))
                one_way, rtt = _ping_pong(r, srv.url, body, n_iter, n_warmup)
                res["one_way"] = _stats_us(one_way)
                res["ping_pong"] = _stats_us(rtt)
                out["results"][name] = res
        finally:
            r.close()
    return out


def _sim_chunks(n_ch: int, n_chunks: int, chunk: int, seed: int = 0) -> list:
    from cortexlink.sim import SimulatedImplant

    imp = SimulatedImplant.from_preset("default", n_channels=n_ch, seed=seed)
    return [imp.read(chunk) for _ in range(n_chunks)]


def run_bus_chunks(codecs: tuple[str, ...] = ("none", "rice", "range"), n_channels: int = 1024,
                   n_chunks: int = 2000, chunk_samples: int = 30, resync_frames: int = 32,
                   unix_socket: bool = True) -> dict:
    """Raw chunks through :class:`~cortexlink.runtime.redis_bus.RedisStreamsBus` with each
    ``chunk_codec``, on a private server: bytes per chunk in the stream, and each chunk's round
    trip — publish (encode, ``XADD``) by one bus, ``XREAD`` (and decode) by a second bus — timed
    one chunk at a time, so the figure is latency and the throughput is what one publisher/reader
    pair sustains. Every received chunk is compared with the one sent.

    Returns ``{"machine", "results": [{codec, bytes_per_chunk, ratio, round_trip (p50/p99 µs),
    mb_s (raw samples through the pair per second), chunks_per_s, identical}]}``.
    """
    import uuid

    from cortexlink.runtime.bus import Message
    from cortexlink.runtime.redis_bus import RedisStreamsBus
    from cortexlink.runtime.redis_server import RedisServer, connect, tuned_for_latency

    chunks = _sim_chunks(n_channels, n_chunks, chunk_samples)
    raw_bytes = chunks[0].data.nbytes
    out: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                       "python": platform.python_version()},
                           "n_channels": n_channels, "chunk_samples": chunk_samples, "n_chunks": n_chunks,
                           "resync_frames": resync_frames, "raw_bytes_per_chunk": raw_bytes, "results": []}
    with RedisServer(unix_socket=unix_socket) as srv:
        url = srv.unix_url if unix_socket else srv.url
        tuned_for_latency(connect(url), strict=False)
        for codec in codecs:
            run = "bench" + uuid.uuid4().hex[:8]
            pub = RedisStreamsBus(connect(url, socket_timeout=30.0), run, chunk_codec=codec,
                                  chunk_codec_resync=resync_frames)
            rd = RedisStreamsBus(connect(url, socket_timeout=30.0), run)
            try:
                sub = rd.subscribe("src.raw", "bench.raw", maxlen=n_chunks + 10)
                pub.advertise("src.raw", remote=True, maxlen=n_chunks + 10)
                rd.pump(0.0)
                rtt = np.zeros(n_chunks, np.int64)
                same = True
                for i, c in enumerate(chunks):
                    t0 = time.perf_counter_ns()
                    pub.publish(Message("src.raw", i, c.start_sample, t0, c))
                    got: list = []
                    while not got:
                        rd.pump(0.5)
                        got = sub.drain()
                    rtt[i] = time.perf_counter_ns() - t0
                    same = same and len(got) == 1 and bool(np.array_equal(got[0].payload.data, c.data))
                pub.sync()
                entries = pub._r.xrange(pub.stream_key("src.raw"), count=n_chunks + 10)
                wire = sum(len(f[b"x"]) for _, f in entries) / max(1, len(entries))
                total_s = rtt.sum() / 1e9
                out["results"].append({
                    "codec": codec, "bytes_per_chunk": wire, "ratio": raw_bytes / wire,
                    "round_trip": _stats_us(rtt), "chunks_per_s": n_chunks / total_s,
                    "mb_s": n_chunks * raw_bytes / 1e6 / total_s, "identical": same,
                    "dropped": sub.n_dropped, "lost": rd.codecs.n_lost})
            finally:
                pub.delete_run()
                pub.close()
                rd.close()
    return out
