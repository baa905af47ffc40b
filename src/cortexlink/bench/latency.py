"""``cortexlink bench latency``: end-to-end loop latency on the runtime, in-process and over Redis.

For each channel count, a few seconds of simulated int16 broadband data are generated once (the
simulator cannot make 4096 channels in real time on a small machine), saved as ``.npy`` and
played by a ``replay_source`` node in 1 ms chunks paced by the wall clock (looped). Each chunk
is stamped with ``time.monotonic_ns()`` when it is handed to the graph (``t_enter``). The graph
is the real-time path of the closed loop::

    replay_source ──raw──▶ dsp ──features──▶ decoder ──intent──▶ cursor

with the feature extractor's defaults (CAR, -4.5 RMS crossings, spike-band power, 20 ms bins;
decoder columns: spike-band power of the good channels above 128 channels) and a Kalman filter
fitted offline on the same data and loaded from disk.

* ``inprocess``: every node in one process on the in-process bus (the default runtime);
* ``redis``, on a private ``redis-server`` (persistence off; reached over a Unix domain socket,
  ``--redis-socket tcp`` for 127.0.0.1), the source always in the main process, in two layouts: ``pipeline`` — dsp, decoder and cursor together in one other
  process, so the raw stream (1024 x 30 int16 = 61 kB per message) crosses one process
  boundary; ``split`` — dsp, decoder and cursor each in its own process: three inter-process
  hops per bin, the raw stream on the first (BRAND's arrangement of one node per process).

Measured, after ``warmup_s`` (calibration of the extractor):

* **latency**: cursor update time − ``t_enter`` of the chunk that completed the bin (so it
  includes the dsp on that chunk, every hop, the decoder and the cursor update), per bin: p50,
  p99, p99.9, max;
* **missed deadlines**: a chunk misses its deadline when it is not processed before the next
  one is due, i.e. the source hands it over more than one chunk period (1 ms) late, or it is
  finished more than 1 ms after ``t_enter`` (the dsp's step for a chunk that completes no bin;
  the cursor update for one that completes a bin);
* **per hop**: time from a message's publication to the start of the step that consumed it, per
  edge (in-process: scheduling within the pass; Redis: XADD → XREAD → decode → step), beside the
  0.6 ms between nodes that BRAND reports at 1024 channels x 30 kHz in 1 ms chunks (their figure,
  not measured here).

``--pin`` pins the processes to CPUs (``cpus`` in the graph; :func:`plan_cpus`): on a 2-CPU
machine the source and the Redis server share one and the dsp gets the other. On the 2-vCPU
shared VM this was developed on, pinning did not lower the p99 (run-to-run noise of the p99 is
about ±0.5 ms there), so the default leaves placement to the scheduler. Timings depend on the
machine and its load; the result carries the machine's description and each row's CPU plan.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run", "print_summary", "latency_graph", "prepare_data", "BRAND_HOP_MS"]

#: Inter-node latency BRAND reports at 1024 channels x 30 kHz in 1 ms chunks (their publication).
BRAND_HOP_MS = 0.6
#: Placements of the Redis condition: where dsp, decoder and cursor run (the source is always in
#: the main process).
LAYOUTS = {"pipeline": "dsp, decoder and cursor in one other process (1 inter-process hop, raw data)",
           "split": "dsp, decoder and cursor each in its own process (3 inter-process hops)"}
FS_HZ = 30000.0


def prepare_data(n_channels: int, loop_s: float, workdir: Path, *, seed: int = 0,
                 calibration_s: float = 0.5, fit_loops: int = 3) -> dict:
    """Generate ``loop_s`` of simulated data, save it for a ``replay_source``, and fit and save a
    Kalman filter on the features the runtime's dsp node will produce from it.

    Returns
    -------
    dict
        ``data`` (path of the .npy), ``decoder`` (path of the .npz), ``n_features``, ``gen_s``.
    """
    from cortexlink.core.types import Chunk
    from cortexlink.decoders import KalmanFilter
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.sim import SimulatedImplant

    t0 = time.perf_counter()
    imp = SimulatedImplant(n_channels=n_channels, seed=seed)
    n = int(round(loop_s * FS_HZ))
    chunk = imp.read(n)
    data = np.ascontiguousarray(chunk.data)
    truth = imp.ground_truth()
    gen_s = time.perf_counter() - t0
    path = workdir / f"sim{n_channels}.npy"
    np.save(path, data)
    cmap = imp.channel_map
    (workdir / f"sim{n_channels}.npy.json").write_text(json.dumps({"channel_map": cmap.to_dict()}))
    # offline features, exactly as the dsp node will make them (same data, same calibration)
    fx = FeatureExtractor(cmap, FS_HZ, bin_ms=20.0, calibration_s=calibration_s)
    rows, ends = [], []
    for k in range(fit_loops):
        bf = fx.step(Chunk(data, FS_HZ, k * n))
        rows.append(bf.data)
        ends.append(bf.bin_start_samples + bf.bin_width_samples)
    X = np.concatenate(rows)
    end = np.concatenate(ends)
    bad = np.asarray(fx.bad_channels_, bool)
    bad_ids = {cmap.channel_ids[i] for i in np.flatnonzero(bad)}
    kinds = ("tx", "sbp") if n_channels <= 128 else ("sbp",)
    names = fx.feature_names
    cols = [i for i, nm in enumerate(names) if nm.rsplit("/", 1)[-1] in kinds and nm.split("/", 1)[0] not in bad_ids]
    X = X[:, cols].astype(np.float64)
    v, _ = truth.intent_at(end % n)
    ok = np.all(np.isfinite(X), axis=1)
    dec = KalmanFilter().fit(X[ok], v[ok], feature_names=tuple(names[i] for i in cols))
    dpath = workdir / f"kalman{n_channels}.npz"
    dec.save(dpath)
    return {"data": str(path), "decoder": str(dpath), "n_features": len(cols), "n_fit_bins": int(ok.sum()),
            "gen_s": gen_s}


def plan_cpus(bus: str, layout: str | None, available: Sequence[int] | None = None) -> dict[str, list[int]]:
    """CPU sets of the benchmark's processes: on a 2-CPU machine the source (main process) and
    the Redis server share the first CPU and the dsp (the only other per-chunk work) gets the
    second; the split layout's decoder and cursor processes, busy once per bin, are left to the
    scheduler. With more CPUs every process gets its own, as far as they go. Empty on a 1-CPU
    machine."""
    if available is None:
        from cortexlink.runtime.runner import _START_AFFINITY

        available = _START_AFFINITY or range(os.cpu_count() or 1)
    cpus = sorted(available)
    if len(cpus) < 2:
        return {}
    if bus != "redis":
        return {"main": [cpus[-1]]}
    want = ["main", "redis"] + (["pipeline"] if layout == "pipeline" else ["dsp", "decoder", "cursor"])
    if len(cpus) == 2:
        return {"main": [cpus[0]], "redis": [cpus[0]], want[2]: [cpus[1]]}
    return {w: [cpus[min(i, len(cpus) - 1)]] for i, w in enumerate(want)}


def latency_graph(data: str, decoder: str, *, bus: str, seconds: float, warmup_s: float,
                  calibration_s: float = 0.5, chunk_ms: float = 1.0, redis_layout: str = "split",
                  cpus: dict[str, list[int]] | None = None, redis_socket: str = "unix") -> dict:
    """The benchmark's graph (see the module docstring). ``redis_layout``: ``"split"`` puts dsp,
    decoder and cursor each in its own process, ``"pipeline"`` all three in one. ``cpus``: CPU
    sets by process (``main``, ``redis``, ``pipeline`` or ``dsp``/``decoder``/``cursor``), as
    :func:`plan_cpus` makes them. ``redis_socket``: how the processes reach the private server
    (``unix`` or ``tcp``)."""
    if redis_layout not in ("split", "pipeline"):
        raise ConfigError(f"redis_layout must be 'split' or 'pipeline'; got {redis_layout!r}")
    cpus = cpus or {}

    def pin(proc: str) -> dict:
        return {"cpus": cpus[proc]} if cpus.get(proc) else {}

    def sub(grp: str) -> dict:
        if bus != "redis":
            return pin("main")
        if redis_layout == "split":
            return {"where": "subprocess", "group": grp, **pin(grp)}
        return {"where": "subprocess", "group": "pipeline", **pin("pipeline")}

    bus_spec: dict[str, Any] = {"kind": bus}
    if bus == "redis":
        bus_spec["socket"] = redis_socket
    if bus == "redis" and cpus.get("redis"):
        bus_spec["server_cpus"] = cpus["redis"]
    return {
        "name": f"latency-{bus}", "bin_ms": 20.0, "clock": "realtime", "seconds": warmup_s + seconds,
        "stats_after_s": warmup_s, "deadline_ms": chunk_ms, "bus": bus_spec,
        # the decoder has no click model: its velocity is what is checked
        "watchdog": {"stall_ms": 5.0, "max_speed": 1e6, "output_timeout_ms": 0},
        "nodes": {
            "source": {"kind": "replay_source", "params": {"path": data, "fs_hz": FS_HZ, "chunk_ms": chunk_ms,
                                                           "loop": True}, **pin("main")},
            "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": calibration_s}},
                    "inputs": {"raw": {"from": "source.raw", "maxlen": 1000}}, **sub("dsp")},
            "decoder": {"kind": "decoder", "params": {"path": decoder, "click": False},
                        "inputs": {"features": "dsp.features"}, **sub("decoder")},
            "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}, **sub("cursor")},
        },
    }


def _hop(info: dict, port: str) -> dict | None:
    lat = info.get("latency") or {}
    h = (lat.get("hops") or {}).get(port)
    if not h or not h.get("n"):
        return None
    out = {k: h[k] for k in ("n", "p50_ms", "p99_ms", "p999_ms", "max_ms")}
    t = (lat.get("transport") or {}).get(port)
    if t and t.get("n"):
        out["transport_p50_ms"] = t["p50_ms"]
        out["transport_p99_ms"] = t["p99_ms"]
    return out


def _one(graph: dict, redis_url: str | None) -> dict:
    from cortexlink.runtime.runner import run_graph

    res = run_graph(graph, redis_url=redis_url if graph["bus"]["kind"] == "redis" else None)
    nodes = res["nodes"]
    cur = (nodes["cursor"].get("summary") or {}).get("loop_latency_ms") or {}
    missed = {n: int(nodes[n].get("n_missed", 0) or 0) for n in ("source", "dsp", "cursor")}
    hops = {"source->dsp": _hop(nodes["dsp"], "raw"), "dsp->decoder": _hop(nodes["decoder"], "features"),
            "decoder->cursor": _hop(nodes["cursor"], "intent")}
    steps = {n: {k: ((nodes[n].get("latency") or {}).get("step") or {}).get(k) for k in ("p50_ms", "p99_ms", "max_ms")}
             for n in ("source", "dsp", "decoder", "cursor")}
    dsp_chunk = (nodes["dsp"].get("summary") or {}).get("chunk_latency")
    return {"p50_ms": cur.get("p50_ms"), "p99_ms": cur.get("p99_ms"), "p999_ms": cur.get("p999_ms"),
            "max_ms": cur.get("max_ms"), "mean_ms": cur.get("mean_ms"), "n_bins": cur.get("n"),
            "missed": sum(missed.values()), "missed_by_node": missed,
            "n_chunks": int(nodes["source"].get("n_out", 0)),
            "dropped": int(sum(e["n_dropped"] for e in res["edges"].values())),
            "hops": hops, "step_ms": steps, "dsp_chunk_latency_ms": dsp_chunk,
            "faults": res["fault_counts"], "wall_s": res["wall_s"], "stop_reason": res["stop_reason"]}


def run(channels: Sequence[int] = (1024, 4096), buses: Sequence[str] = ("inprocess", "redis"),
        seconds: float = 60.0, *, warmup_s: float = 5.0, loop_s: float = 1.0, seed: int = 0,
        redis_url: str = "auto", redis_layouts: Sequence[str] = ("pipeline", "split"), pin: bool = False,
        redis_socket: str = "unix", progress: bool = True) -> dict:
    """Run the latency benchmark; return JSON-able results (``results[] = {bus, channels, layout,
    p50_ms, p99_ms, p999_ms, max_ms, missed, ...}``), one row per channel count and condition:
    ``inprocess``, then ``redis`` once per layout in ``redis_layouts``. ``pin``: give each
    process CPUs of its own as far as the machine allows (:func:`plan_cpus`; the Redis server
    only when this run starts it). ``redis_socket``: ``unix`` (default) or ``tcp``, how the
    processes reach the private server of ``redis_url="auto"``."""
    from cortexlink.bench.dsp import cpu_times, machine_info, steal_share

    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 8:
            raise ConfigError(f"channels must be integers >= 8; got {c!r}")
    for b in buses:
        if b not in ("inprocess", "redis"):
            raise ConfigError(f"buses must be drawn from ['inprocess', 'redis']; got {b!r}")
    if isinstance(redis_layouts, str) or not redis_layouts or any(x not in LAYOUTS for x in redis_layouts):
        raise ConfigError(f"redis_layouts must be a non-empty list drawn from {sorted(LAYOUTS)}; got {redis_layouts!r}")
    if redis_socket not in ("unix", "tcp"):
        raise ConfigError(f"redis_socket must be 'unix' or 'tcp'; got {redis_socket!r}")
    conditions = [(b, None) for b in buses if b == "inprocess"] + [("redis", x) for b in buses if b == "redis"
                                                                  for x in redis_layouts]
    if not seconds > 0 or not warmup_s > 0.5 or not loop_s >= 0.5:
        raise ConfigError(f"seconds must be > 0, warmup_s > 0.5 (the extractor calibrates on 0.5 s) and "
                          f"loop_s >= 0.5; got {seconds!r}, {warmup_s!r}, {loop_s!r}")
    out: dict[str, Any] = {
        "benchmark": "latency", "machine": machine_info(),
        "settings": {"channels": list(channels), "pin_cpus": bool(pin), "buses": list(buses), "seconds": seconds, "warmup_s": warmup_s,
                     "redis_socket": redis_socket if redis_url == "auto" else redis_url.split(":", 1)[0],
                     "loop_s": loop_s, "chunk_ms": 1.0, "bin_ms": 20.0, "fs_hz": FS_HZ, "seed": seed,
                     "graph": "replay_source -> dsp -> decoder (Kalman, loaded) -> cursor",
                     "redis_layouts": {x: LAYOUTS[x] for x in redis_layouts}},
        "definitions": {
            "latency": "cursor update time - t_enter of the chunk that completed the bin (monotonic clock)",
            "missed": "chunks handed over more than 1 chunk period late by the source, or finished more than "
                      "1 chunk period after entering the graph (dsp step for chunks completing no bin, cursor "
                      "update for chunks completing a bin)",
            "hop": "publication of a message -> start of the step that consumed it, per edge",
            "steal_pct": "share of the machine's CPU time the hypervisor gave to other guests during the case "
                         "(/proc/stat); latency tails measured while it is above ~1 % describe the host's load"},
        "brand_reference": {"hop_ms": BRAND_HOP_MS, "note": "BRAND's published inter-node latency at 1024 ch x "
                                                            "30 kHz, 1 ms chunks (not measured here)"},
        "results": []}
    with tempfile.TemporaryDirectory(prefix="cortexlink-latency-") as tmp:
        work = Path(tmp)
        for ch in channels:
            if progress:
                logger.warning("latency bench: generating %.1f s of %d-channel data and fitting the decoder", loop_s, ch)
            prep = prepare_data(ch, loop_s, work, seed=seed)
            for bus, layout in conditions:
                if progress:
                    logger.warning("latency bench: %d channels, %s bus%s, %.0f s (+%.0f s warm-up)", ch, bus,
                                   f" ({layout})" if layout else "", seconds, warmup_s)
                plan = plan_cpus(bus, layout) if pin else {}
                if redis_url != "auto":
                    plan.pop("redis", None)
                g = latency_graph(prep["data"], prep["decoder"], bus=bus, seconds=seconds, warmup_s=warmup_s,
                                  redis_layout=layout or "split", cpus=plan, redis_socket=redis_socket)
                t_cpu = cpu_times()
                r = _one(g, redis_url)
                steal = steal_share(t_cpu, cpu_times())
                row = {"bus": bus, "channels": ch, "layout": "one process" if bus == "inprocess" else f"redis {layout}",
                       **{k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "missed")},
                       "n_bins": r["n_bins"], "n_chunks": r["n_chunks"], "dropped": r["dropped"],
                       "n_features": prep["n_features"], "cpus": plan, "mean_ms": r["mean_ms"], "missed_by_node": r["missed_by_node"],
                       "hops": r["hops"], "step_ms": r["step_ms"], "dsp_chunk_latency_ms": r["dsp_chunk_latency_ms"],
                       "faults": r["faults"], "wall_s": r["wall_s"],
                       "steal_pct": None if steal is None else round(100.0 * steal, 2)}
                hp = [h["p50_ms"] for h in r["hops"].values() if h]
                row["hop_p50_ms_mean"] = float(np.mean(hp)) if hp else None
                row["hop_p99_ms_max"] = max((h["p99_ms"] for h in r["hops"].values() if h), default=None)
                row["brand_hop_ms"] = BRAND_HOP_MS
                out["results"].append(row)
                if progress:
                    logger.warning("  p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms, missed %d, steal %s %%, "
                                   "hops p50 %s", row["p50_ms"] or -1, row["p99_ms"] or -1, row["p999_ms"] or -1,
                                   row["max_ms"] or -1, row["missed"], row["steal_pct"],
                                   {k: round(h["p50_ms"], 3) for k, h in r["hops"].items() if h})
    return out


def print_summary(result: dict) -> None:
    """Table of latency percentiles, missed deadlines and per-hop medians."""
    m = result["machine"]
    s = result["settings"]
    print(f"machine: {m['cpu']} ({m['cores']} cores); {s['seconds']:.0f} s per condition after {s['warmup_s']:.0f} s "
          f"warm-up; 1 ms chunks, 20 ms bins; {s['graph']}")
    print(f"{'condition':<16}{'channels':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'missed':>8}"
          f"{'bins':>7}{'steal %':>9}   hop p50/p99 ms (BRAND: {result['brand_reference']['hop_ms']} ms)")

    def f(v: float | None) -> str:
        return f"{v:.3f}" if v is not None else "-"

    for r in result["results"]:
        hops = "  ".join(f"{k} {h['p50_ms']:.3f}/{h['p99_ms']:.3f}" for k, h in r["hops"].items() if h)
        cond = r["bus"] if r["bus"] == "inprocess" else r.get("layout", r["bus"])
        print(f"{cond:<16}{r['channels']:>9}{f(r['p50_ms']):>9}{f(r['p99_ms']):>9}{f(r['p999_ms']):>10}"
              f"{f(r['max_ms']):>9}{r['missed']:>8}{r['n_bins'] or 0:>7}{f(r.get('steal_pct')):>9}   {hops}")
