"""Recording throughput: raw broadband at 30 kHz written while a real-time loop keeps pace.

For each channel count, a producer hands 1 ms chunks of int16 samples (simulated data, a few
seconds generated once and looped) to the recorder at wall-clock pace, as the acquisition loop
of a session would, for ``seconds``. Reported: items and samples dropped (target: none), the
writer's peak queue, MB/s reaching the disk, the time each ``write_raw`` call took on the
real-time thread (p50/p99/max) and real-time deadlines the producer missed. The peer,
``h5py_inline``, appends the same chunks to a chunked HDF5 dataset on the real-time thread
itself (what a script without a writer thread does), measured the same way. ``cortexlink-rice``,
``cortexlink-range`` and ``cortexlink-lms`` are the session recorder with ``raw_codec`` (each raw record one frame of
the lossless codec, encoded on the writer thread); ``ratio`` is the input bytes over the raw
stream's bytes on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FS = 30000.0
#: the writers measured: the session recorder (raw as int16 rows, or compressed) and HDF5 inline
PEERS = ("cortexlink", "cortexlink-rice", "cortexlink-range", "cortexlink-lms", "h5py_inline")


def _data(n_ch: int, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    from cortexlink.sim import SimulatedImplant

    imp = SimulatedImplant.from_preset("default", n_channels=n_ch, seed=seed)
    return np.ascontiguousarray(imp.read(int(seconds * FS)).data)


def _pct(a: list[float]) -> dict:
    x = np.asarray(a, dtype=float)
    return {"p50_us": float(np.percentile(x, 50)), "p99_us": float(np.percentile(x, 99)), "max_us": float(x.max())}


def _produce(write: Any, data: np.ndarray, seconds: float, chunk: int) -> dict:
    from cortexlink.core.types import Chunk

    n_chunks = int(seconds * FS / chunk)
    n_loop = data.shape[0] // chunk
    call_us: list[float] = []
    missed = 0
    t0 = time.perf_counter()
    for i in range(n_chunks):
        due = t0 + (i + 1) * chunk / FS          # the chunk is complete at the end of its 1 ms
        ahead = due - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        j = i % n_loop
        c = Chunk(data[j * chunk:(j + 1) * chunk], FS, i * chunk, time.monotonic_ns(), i)
        ts = time.perf_counter()
        write(c)
        te = time.perf_counter()
        call_us.append((te - ts) * 1e6)
        if te > due + chunk / FS:                # not done before the next chunk was due
            missed += 1
    return {"chunks": n_chunks, "wall_s": time.perf_counter() - t0, "write_call": _pct(call_us), "missed": missed}


def run_one(peer: str, n_ch: int, seconds: float, out_dir: Path, chunk_ms: float = 1.0) -> dict:
    from cortexlink.core.types import ChannelMap

    data = _data(n_ch)
    chunk = int(round(chunk_ms * FS / 1000.0))
    target = out_dir / f"{peer}-{n_ch}"
    res: dict[str, Any] = {"peer": peer, "channels": n_ch, "seconds": seconds, "chunk_ms": chunk_ms,
                           "input_mb_s": n_ch * FS * 2 / 1e6}
    if peer in PEERS[:4]:
        from cortexlink.io.session_log import SessionRecorder

        codec = peer.partition("-")[2] or "none"
        rec = SessionRecorder(target, channel_map=ChannelMap.grid(n_ch), fs_hz=FS, catalogue=False,
                              expected_seconds=seconds, raw_codec=codec)
        prod = _produce(rec.write_raw, data, seconds, chunk)
        t_close = time.perf_counter()
        st = rec.stats()
        m = rec.close()
        res["close_s"] = time.perf_counter() - t_close
        raw = m["streams"].get("raw", {})
        res.update(prod)
        res.update({"dropped_items": st["dropped_total"], "dropped_samples": st["streams"]["raw"]["dropped_rows"],
                    "max_queue_mb": st["max_queue_bytes_seen"] / 1e6, "bytes_on_disk": raw.get("bytes", 0),
                    "samples_recorded": raw.get("rows", 0)})
    elif peer == "h5py_inline":
        import h5py

        target.mkdir(parents=True)
        with h5py.File(target / "raw.h5", "w") as f:
            ds = f.create_dataset("raw", shape=(0, n_ch), maxshape=(None, n_ch), dtype="int16",
                                  chunks=(max(1, int(FS) // 10), n_ch))

            def write(c: Any) -> None:
                n0 = ds.shape[0]
                ds.resize(n0 + c.n_samples, axis=0)
                ds[n0:] = c.data

            prod = _produce(write, data, seconds, chunk)
            t_close = time.perf_counter()
            n_rec = ds.shape[0]
        res["close_s"] = time.perf_counter() - t_close
        res.update(prod)
        res.update({"dropped_items": 0, "dropped_samples": 0, "max_queue_mb": 0.0,
                    "bytes_on_disk": (target / "raw.h5").stat().st_size, "samples_recorded": n_rec})
    else:
        raise ValueError(f"peer must be one of {', '.join(PEERS)}; got {peer!r}")
    wall = res["wall_s"] + res["close_s"]
    res["written_mb_s"] = res["bytes_on_disk"] / 1e6 / wall if wall > 0 else 0.0
    res["ratio"] = res["samples_recorded"] * n_ch * 2 / res["bytes_on_disk"] if res["bytes_on_disk"] else 0.0
    res["recorded_mb_s"] = res["samples_recorded"] * n_ch * 2 / 1e6 / wall if wall > 0 else 0.0
    shutil.rmtree(target, ignore_errors=True)
    return res


def run(channels: list[int], seconds: float = 20.0, peers: tuple[str, ...] = ("cortexlink", "h5py_inline"),
        out_dir: str | None = None, chunk_ms: float = 1.0) -> dict:
    """Run every peer at every channel count; returns ``{"results": [...], "machine": {...}}``."""
    import platform

    base = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="cortexlink-bench-record-"))
    base.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in channels:
            for p in peers:
                logger.info("bench record: %s at %d channels for %g s", p, n, seconds)
                results.append(run_one(p, n, seconds, base, chunk_ms))
    finally:
        if out_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return {"benchmark": "record", "results": results,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "disk": str(base)}}
