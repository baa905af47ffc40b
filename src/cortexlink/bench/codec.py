"""``cortexlink bench codec``: lossless compression of raw int16 samples, cortexlink's codec and
general-purpose peers side by side, in one run on the same data.

Datasets: the Neuralink N1 broadband WAV files (one electrode per file, 19,531 Hz) when a folder
is given or found, and simulated 1,024-channel data at 30 kHz (:class:`cortexlink.sim
.SimulatedImplant`). For each codec and dataset:

- ``ratio``: for WAV files, total original file bytes / total compressed bytes (the N1
  challenge's definition; each file compressed on its own); for simulated data, raw int16 bytes /
  compressed bytes.
- ``encode_mb_s`` / ``decode_mb_s``: raw sample megabytes (10**6) per second, one thread, over the
  whole dataset.
- ``chunk_latency_p50_ms`` / ``chunk_latency_p99_ms``: time to encode one 1 ms chunk (all channels
  of the stream; for N1 the files' first seconds side by side as one multichannel stream).
  cortexlink's encoder streams (its state carries from chunk to chunk); the peers compress each
  chunk on its own, which is what they can do with a chunk as it arrives.
- ``lossless``: every sample decoded and compared.

``cortexlink`` is the codec's default (context-modelled range coding); ``cortexlink-rice`` the
same prediction with adaptive Golomb-Rice codes (faster, larger).

cortexlink encodes the N1 files in frames of 1 s (a resynchronisation point every 8 frames) and
the simulated data in 1 ms frames (one 1 ms chunk per frame, as it streams); the peers compress
each file (or the whole simulated array) in one call.
"""

from __future__ import annotations

import bz2
import lzma
import os
import sys
import time
import wave
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

from .dsp import machine_info

CODECS = ("cortexlink", "cortexlink-rice", "zlib-9", "xz-9", "bz2-9", "zstd-3", "zstd-19")
N1_FRAME_S = 1.0
N1_RESYNC_FRAMES = 8
SIM_RESYNC_FRAMES = 100
LATENCY_CHUNKS = 2000


def default_n1_folder() -> Path | None:
    """``$CORTEXLINK_SHARED_DATA/n1_broadband`` or ``../shared/data/n1_broadband`` if present."""
    candidates = []
    env = os.environ.get("CORTEXLINK_SHARED_DATA")
    if env:
        candidates.append(Path(env) / "n1_broadband")
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "data" / "n1_broadband",
                   Path.cwd().parent / "shared" / "data" / "n1_broadband"]
    return next((c for c in candidates if c.is_dir() and any(c.glob("*.wav"))), None)


def read_wav_folder(folder: Path) -> tuple[list[np.ndarray], list[int], float]:
    """The mono int16 WAV files of ``folder``: (samples per file, file sizes in bytes, rate)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValidationError(f"--data must be a folder of .wav files; {folder} is not a folder")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise ValidationError(f"data folder {folder} holds no .wav files")
    arrays, sizes, rate = [], [], None
    for f in files:
        try:
            with wave.open(str(f)) as w:
                if w.getnchannels() != 1 or w.getsampwidth() != 2:
                    raise ValidationError(f"{f.name}: only mono 16-bit WAV files are supported "
                                          f"({w.getnchannels()} channels, {8 * w.getsampwidth()} bits)")
                fs = float(w.getframerate())
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
        except (wave.Error, EOFError) as e:
            raise ValidationError(f"{f.name}: not a readable WAV file ({e})") from None
        if rate is not None and fs != rate:
            raise ValidationError(f"{f.name}: {fs:g} Hz, other files {rate:g} Hz")
        rate = fs
        arrays.append(x)
        sizes.append(f.stat().st_size)
    return arrays, sizes, float(rate)


# ----------------------------------------------------------------------------- codecs

def _peer(name: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | str:
    """(compress, decompress) of a general-purpose peer, or why it is not available."""
    if name == "zlib-9":
        return (lambda b: zlib.compress(b, 9)), zlib.decompress
    if name == "xz-9":
        return (lambda b: lzma.compress(b, preset=9)), lzma.decompress
    if name == "bz2-9":
        return (lambda b: bz2.compress(b, 9)), bz2.decompress
    if name.startswith("zstd-"):
        try:
            import zstandard
        except ImportError:
            return "zstandard is not installed (pip install 'cortexlink[bench]')"
        c = zstandard.ZstdCompressor(level=int(name.split("-")[1]), threads=0)
        d = zstandard.ZstdDecompressor()
        return c.compress, d.decompress
    raise ConfigError(f"unknown codec {name!r}; codecs are {', '.join(CODECS)}")


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _latencies(encode_chunk: Callable[[np.ndarray], bytes], stream: np.ndarray, chunk: int) -> tuple[float, float]:
    times = []
    for i in range(0, min(stream.shape[0] - chunk + 1, LATENCY_CHUNKS * chunk), chunk):
        part = stream[i:i + chunk]
        t0 = time.perf_counter()
        encode_chunk(part)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _measure(name: str, dataset: dict) -> dict:
    """One codec on one dataset: sizes, throughput, latency and a sample-by-sample check."""
    from cortexlink import codec

    arrays: list[np.ndarray] = dataset["arrays"]
    raw = sum(a.nbytes for a in arrays)
    stream, chunk = dataset["latency_stream"], dataset["chunk_samples"]
    if name in ("cortexlink", "cortexlink-rice"):
        frame, resync = dataset["frame_samples"], dataset["resync_frames"]
        entropy = "rice" if name == "cortexlink-rice" else "range"
        blobs, t_enc = _timed(lambda: [codec.encode_array(a, chunk_samples=frame, resync_frames=resync,
                                                          entropy=entropy) for a in arrays])
        decoded, t_dec = _timed(lambda: [codec.decode_array(b) for b in blobs])
        enc = codec.Encoder(stream.shape[1], resync_frames=resync, entropy=entropy)
        p50, p99 = _latencies(enc.encode, stream, chunk)
    else:
        peer = _peer(name)
        if isinstance(peer, str):
            return {"codec": name, "dataset": dataset["name"], "skipped": peer}
        comp, decomp = peer
        blobs, t_enc = _timed(lambda: [comp(a.tobytes()) for a in arrays])
        out, t_dec = _timed(lambda: [decomp(b) for b in blobs])
        decoded = [np.frombuffer(o, np.int16).reshape(a.shape) for o, a in zip(out, arrays)]
        p50, p99 = _latencies(lambda part: comp(part.tobytes()), stream, chunk)
    lossless = len(decoded) == len(arrays) and all(
        d.dtype == np.int16 and d.size == a.size and np.array_equal(d.reshape(a.shape), a)
        for d, a in zip(decoded, arrays))
    packed = sum(len(b) for b in blobs)
    return {"codec": name, "dataset": dataset["name"], "ratio": round(dataset["original_bytes"] / packed, 4),
            "compressed_bytes": packed, "encode_mb_s": _sig(raw / t_enc / 1e6),
            "decode_mb_s": _sig(raw / t_dec / 1e6), "chunk_latency_p50_ms": _sig(p50),
            "chunk_latency_p99_ms": _sig(p99), "lossless": bool(lossless)}


# ----------------------------------------------------------------------------- datasets

def n1_dataset(folder: Path, latency_seconds: float = 2.0) -> dict:
    arrays, sizes, fs = read_wav_folder(folder)
    n_lat = min(min(a.size for a in arrays), int(round(latency_seconds * fs)))
    return {"name": "n1_broadband", "arrays": arrays, "original_bytes": sum(sizes), "fs_hz": fs,
            "n_files": len(arrays), "n_channels": 1,
            "latency_stream": np.stack([a[:n_lat] for a in arrays], axis=1),
            "chunk_samples": max(1, int(round(fs / 1000))), "frame_samples": int(round(N1_FRAME_S * fs)),
            "resync_frames": N1_RESYNC_FRAMES, "seconds": round(sum(a.size for a in arrays) / fs, 3)}


def sim_dataset(channels: int, seconds: float, seed: int, fs_hz: float = 30000.0) -> dict:
    from cortexlink.sim import SimulatedImplant

    extra = {} if channels >= 16 else {"n_dead": min(1, channels), "n_saturating": 0}
    imp = SimulatedImplant(n_channels=channels, fs_hz=fs_hz, seed=seed, **extra)
    x = np.ascontiguousarray(imp.read(max(1, int(round(seconds * fs_hz)))).data)
    chunk = max(1, int(round(fs_hz / 1000)))
    return {"name": f"sim_{channels}ch_{fs_hz / 1000:g}khz", "arrays": [x], "original_bytes": x.nbytes,
            "fs_hz": fs_hz, "n_files": None, "n_channels": channels, "latency_stream": x,
            "chunk_samples": chunk, "frame_samples": chunk, "resync_frames": SIM_RESYNC_FRAMES,
            "seconds": seconds}


def run(*, data: Path | None = None, use_default_data: bool = True, channels: int = 1024,
        seconds: float = 2.0, seed: int = 0, codecs: Sequence | None = None, progress: bool = False) -> dict:
    """Measure every codec on the N1 files (``data``, else the default folder if present) and on
    simulated data; return the JSON-ready result (see the module doc)."""
    codecs = list(codecs) if codecs else list(CODECS)
    bad = [c for c in codecs if c not in CODECS]
    if bad:
        raise ConfigError(f"codecs must be among {', '.join(CODECS)}; got {', '.join(bad)}")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 65535:
        raise ConfigError(f"channels must be an integer in [1, 65535]; got {channels!r}")
    if not (isinstance(seconds, (int, float)) and 0 < seconds <= 600):
        raise ConfigError(f"seconds must be in (0, 600]; got {seconds!r}")
    folder = data if data is not None else (default_n1_folder() if use_default_data else None)
    datasets = []
    if folder is not None:
        datasets.append(n1_dataset(Path(folder)))
    datasets.append(sim_dataset(channels, seconds, seed))
    from cortexlink import codec

    for entropy in ("range", "rice"):   # load the compiled kernels before anything is timed
        codec.decode_array(codec.encode_array(np.arange(512, dtype=np.int16).reshape(256, 2) * 64,
                                              entropy=entropy))
    results, skipped = [], []
    for ds in datasets:
        for name in codecs:
            if progress:
                print(f"  {ds['name']}: {name} ...", file=sys.stderr, flush=True)
            r = _measure(name, ds)
            (skipped if "skipped" in r else results).append(r)
    info = [{k: v for k, v in ds.items() if k not in ("arrays", "latency_stream")} | {"folder": str(folder)}
            if ds["name"] == "n1_broadband" else {k: v for k, v in ds.items() if k not in ("arrays", "latency_stream")}
            for ds in datasets]
    return {"bench": "codec", "machine": machine_info(),
            "settings": {"codecs": codecs, "channels": channels, "seconds": seconds, "seed": seed,
                         "latency_chunks": LATENCY_CHUNKS},
            "datasets": info, "results": results, "skipped": skipped}


def print_summary(result: dict, file: Any = None) -> None:
    """A table per dataset of a :func:`run` result."""
    out = file if file is not None else sys.stdout
    m = result["machine"]
    print(f"machine: {m['cpu']} ({m['cores']} cores); one thread per codec", file=out)
    for ds in result["datasets"]:
        print(f"\n{ds['name']}: {ds['seconds']} s of samples at {ds['fs_hz']:g} Hz", file=out)
        print(f"  {'codec':<16}{'ratio':>8}{'enc MB/s':>10}{'dec MB/s':>10}{'1ms p50 ms':>12}"
              f"{'p99 ms':>9}  lossless", file=out)
        for r in result["results"]:
            if r["dataset"] == ds["name"]:
                print(f"  {r['codec']:<16}{r['ratio']:>8.3f}{r['encode_mb_s']:>10.1f}{r['decode_mb_s']:>10.1f}"
                      f"{r['chunk_latency_p50_ms']:>12.4f}{r['chunk_latency_p99_ms']:>9.4f}  {r['lossless']}",
                      file=out)
    for s in result.get("skipped", []):
        print(f"skipped {s['codec']} on {s['dataset']}: {s['skipped']}", file=out)
