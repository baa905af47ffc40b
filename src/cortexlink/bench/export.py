"""``cortexlink bench export``: NWB export throughput and memory on a long, wide session.

A synthetic session folder of ``minutes`` x ``channels`` raw int16 samples at 30 kHz is
written with :class:`~cortexlink.io.session_log.SessionRecorder`: a few seconds of
:class:`~cortexlink.sim.SimulatedImplant` data (spikes, noise, LFP) tiled in time, in 20 ms
records, plus 20 ms feature bins (threshold crossings and spike-band power computed from the
same block with numpy). Then each compression (the peers: gzip, lzf, none) is exported by
:func:`~cortexlink.io.nwb.export_nwb` in its own fresh process, so ``peak_rss_mb`` is that
export's alone; the synthesis is not measured. Reported per peer: seconds, MB/s of raw input
read, MB/s of file written, file size, compression ratio, peak RSS and its growth during the
export. Free disk space is checked before anything is written; every file is removed after.

Run a worker by hand with ``python -m cortexlink.bench.export SPEC.json`` (it writes its
figures to ``SPEC["result"]``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["make_session", "run", "summary_lines"]

FS_HZ = 30000.0
PEERS = ("gzip", "lzf", "none")


def _features_for_block(data: np.ndarray, gain_uv: float, bin_samples: int) -> np.ndarray:
    """Crude tx/sbp per bin from the block (mean-removed, no filter): realistic sizes and value ranges."""
    n_bins = data.shape[0] // bin_samples
    x = data[:n_bins * bin_samples].astype(np.float32) * np.float32(gain_uv)
    x -= x.mean(axis=0, keepdims=True)
    rms = np.sqrt(np.mean(x * x, axis=0)) + 1e-6
    below = x < -4.5 * rms
    cross = below[1:] & ~below[:-1]
    cross = np.concatenate([np.zeros((1, x.shape[1]), bool), cross])
    tx = cross.reshape(n_bins, bin_samples, -1).sum(axis=1).astype(np.float32)
    sbp = np.abs(x).reshape(n_bins, bin_samples, -1).mean(axis=1).astype(np.float32)
    return np.concatenate([tx, sbp], axis=1)


def make_session(path: str | os.PathLike, *, minutes: float, channels: int, seed: int = 0,
                 block_seconds: float = 2.0, progress: bool = False) -> dict:
    """Write a synthetic session folder (raw + features) of ``minutes`` x ``channels``.

    Returns ``{"path", "raw_bytes", "n_samples", "seconds"}``.
    """
    from cortexlink.core.types import BinnedFeatures, Chunk
    from cortexlink.io.session_log import SessionRecorder
    from cortexlink.sim import SimulatedImplant

    t0 = time.perf_counter()
    imp = SimulatedImplant(n_channels=int(channels), seed=int(seed))
    cm = imp.channel_map
    fs = float(imp.fs_hz)
    bin_samples = int(round(0.02 * fs))
    block_n = max(bin_samples, int(round(block_seconds * fs)) // bin_samples * bin_samples)
    block = np.ascontiguousarray(imp.read(block_n).data)
    feats = _features_for_block(block, float(cm.gain_uv[0]), bin_samples)
    names = [f"{c}/tx" for c in cm.channel_ids] + [f"{c}/sbp" for c in cm.channel_ids]
    n_total = int(round(minutes * 60.0 * fs)) // bin_samples * bin_samples
    rec = SessionRecorder(path, channel_map=cm, fs_hz=fs, participant_id="bench-0001",
                          config={"name": "bench-export", "implant": {"n_channels": int(channels), "seed": int(seed)},
                                  "synthetic": f"{block_seconds:g} s of SimulatedImplant data tiled"},
                          seeds={"seed": int(seed)}, expected_seconds=n_total / fs, on_full="block",
                          block_timeout_s=120.0, catalogue=False)
    rec.set_source(cm, fs, dsp={"fs_hz": fs, "bin_ms": 20.0, "features": ["tx", "sbp"]},
                   loop={"dt_s": 0.02, "feature_kinds": ["tx", "sbp"], "samples_per_bin": bin_samples})
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_total, unit="sample", unit_scale=True, desc="synthesis", leave=False)
    pos = 0
    seq = 0
    while pos < n_total:
        n_blk = min(block_n, n_total - pos)
        for a in range(0, n_blk, bin_samples):
            rec.write_raw(Chunk(block[a:a + bin_samples], fs, pos + a, 0, seq))
            seq += 1
        nb = n_blk // bin_samples
        rec.write_features(BinnedFeatures(feats[:nb], pos + bin_samples * np.arange(nb), bin_samples, fs, names))
        pos += n_blk
        if bar is not None:
            bar.update(n_blk)
    if bar is not None:
        bar.close()
    manifest = rec.close()
    dropped = manifest.get("dropped") or {}
    if dropped:
        raise RuntimeError(f"synthesis dropped records ({dropped}); the disk is too slow for the recorder queue")
    raw_bytes = (Path(path) / "streams" / "raw.clog").stat().st_size
    return {"path": str(path), "raw_bytes": raw_bytes, "n_samples": n_total, "channels": int(channels),
            "seconds": round(time.perf_counter() - t0, 2)}


def _worker(spec_path: str) -> None:
    """Export in this (fresh) process and write the figures to ``spec["result"]``."""
    spec = json.loads(Path(spec_path).read_text())
    import importlib

    from cortexlink.io import nwb

    for mod in ("h5py", "pynwb", "hdmf"):    # imported first, so the RSS growth below is the export's own
        importlib.import_module(mod)

    rss0 = nwb._peak_rss_mb()     # VmHWM: this process image only (ru_maxrss keeps the parent's peak)
    t0 = time.perf_counter()
    summary = nwb.export_nwb(spec["session"], spec["out"], compression=spec["compression"],
                             chunk_seconds=spec["chunk_seconds"], overwrite=True)
    elapsed = time.perf_counter() - t0
    rss1 = nwb._peak_rss_mb()
    summary.update({"seconds": round(elapsed, 2), "rss_before_export_mb": round(rss0, 1),
                    "peak_rss_mb": round(rss1, 1), "rss_growth_mb": round(rss1 - rss0, 1)})
    Path(spec["result"]).write_text(json.dumps(summary, default=str))


def run(*, minutes: float = 10.0, channels: int = 1024, peers: Any = ("gzip",), chunk_seconds: float = 1.0,
        seed: int = 0, workdir: str | os.PathLike | None = None, keep: bool = False,
        progress: bool = False) -> dict:
    """Synthesize the session, export it once per peer (compression) in a fresh process, report.

    Raises
    ------
    InsufficientDiskSpace
        When the session plus the largest export would not fit in ``workdir``.
    """
    from cortexlink.core.errors import ConfigError
    from cortexlink.io.session_log import InsufficientDiskSpace

    peers = list(peers)
    for p in peers:
        if p not in PEERS:
            raise ConfigError(f"peers must be taken from {PEERS}; got {p!r}")
    base = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    raw_bytes = int(round(minutes * 60.0 * FS_HZ)) * int(channels) * 2
    # the session (raw + 20 ms features) + one export at a time (compressed files measured at 0.62-0.74 x raw)
    need = int(raw_bytes * (1.01 + (1.0 if "none" in peers else 0.8))) + (1 << 30)
    free = shutil.disk_usage(base).free
    if free < need:
        raise InsufficientDiskSpace(
            f"bench export of {minutes:g} min x {channels} channels needs about {need / 1e9:.1f} GB in {base} "
            f"(session + one export at a time); {free / 1e9:.1f} GB free - pass a smaller --minutes or another --dir")
    work = Path(tempfile.mkdtemp(prefix="cortexlink-bench-export-", dir=base))
    result: dict = {"benchmark": "export", "minutes": minutes, "channels": channels, "fs_hz": FS_HZ,
                    "chunk_seconds": chunk_seconds, "machine": {"platform": platform.platform(),
                                                                "cpu_count": os.cpu_count(),
                                                                "python": platform.python_version()},
                    "workdir": str(work), "peers": {}}
    try:
        sess = make_session(work / "session", minutes=minutes, channels=channels, seed=seed, progress=progress)
        result["session"] = sess
        for peer in peers:
            out = work / f"export-{peer}.nwb"
            spec = {"session": sess["path"], "out": str(out), "compression": None if peer == "none" else peer,
                    "chunk_seconds": chunk_seconds, "result": str(work / f"result-{peer}.json")}
            spec_path = work / f"spec-{peer}.json"
            spec_path.write_text(json.dumps(spec))
            if progress:
                logger.warning("exporting with %s ...", peer)
            proc = subprocess.run([sys.executable, "-m", "cortexlink.bench.export", str(spec_path)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                result["peers"][peer] = {"error": proc.stderr.strip()[-2000:]}
                continue
            s = json.loads(Path(spec["result"]).read_text())
            size = s["bytes"]
            result["peers"][peer] = {
                "seconds": s["seconds"], "raw_mb_per_s": round(sess["raw_bytes"] / 1e6 / s["seconds"], 1),
                "written_mb_per_s": round(size / 1e6 / s["seconds"], 1), "file_mb": round(size / 1e6, 1),
                "compression_ratio": round(sess["raw_bytes"] / size, 3), "peak_rss_mb": s["peak_rss_mb"],
                "rss_growth_mb": s["rss_growth_mb"], "rss_before_export_mb": s["rss_before_export_mb"],
                "chunk_shape": (s.get("raw") or {}).get("chunk_shape")}
            if not keep:
                out.unlink(missing_ok=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    result["raw_gb"] = round(raw_bytes / 1e9, 2)
    return result


def summary_lines(result: dict) -> list[str]:
    """Human-readable table of a :func:`run` result (the cli prints it)."""
    s = result.get("session", {})
    lines = [f"NWB export of {result['minutes']:g} min x {result['channels']} channels at 30 kHz "
             f"({s.get('raw_bytes', 0) / 1e9:.2f} GB raw int16; synthesis {s.get('seconds', 0):.0f} s, not counted)",
             f"{'peer':<6} {'seconds':>8} {'raw MB/s':>9} {'file MB/s':>10} {'file MB':>9} {'ratio':>6} "
             f"{'peak RSS MB':>12} {'growth MB':>10}"]
    for name, p in result["peers"].items():
        if "error" in p:
            lines.append(f"{name:<6} error: {p['error'][-300:]}")
            continue
        lines.append(f"{name:<6} {p['seconds']:>8.1f} {p['raw_mb_per_s']:>9.1f} {p['written_mb_per_s']:>10.1f} "
                     f"{p['file_mb']:>9.1f} {p['compression_ratio']:>6.2f} {p['peak_rss_mb']:>12.0f} "
                     f"{p['rss_growth_mb']:>10.0f}")
    m = result["machine"]
    lines.append(f"machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}")
    return lines


if __name__ == "__main__":  # pragma: no cover - worker entry point
    _worker(sys.argv[1])
