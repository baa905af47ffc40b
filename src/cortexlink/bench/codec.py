"""``cortexlink bench codec``: lossless compression of raw int16 samples, cortexlink's codec and
general-purpose peers side by side, in one run on the same data.

Datasets: the Neuralink N1 broadband WAV files (one electrode per file, 19,531 Hz) when a folder
is given or found, and simulated 1,024-channel data at 30 kHz (:class:`cortexlink.sim
.SimulatedImplant`). For each codec and dataset:

- ``ratio``: for WAV files, total original file bytes / total compressed bytes (the N1
  challenge's definition; each file compressed on its own); for simulated data, raw int16 bytes /
  compressed bytes.
- ``encode_mb_s`` / ``decode_mb_s``: raw sample megabytes (10**6) per second, one thread, over the
  whole dataset. Before anything is timed, cortexlink's compiled kernels are loaded (a one-off
  per process, as a peer's library is loaded before it runs; for writeable and read-only arrays,
  which numba compiles apart: WAV samples and the simulator's are read-only) and the process
  touches memory of three times the largest dataset once (at most 1 GiB): on a virtual machine whose memory the
  host backs lazily, the first touch of a page is slow (~35 µs a page on the development VM:
  0.46 s for a first 123 MB output array, 0.014 s for the next), and would otherwise fall on
  whichever codec runs first.
- ``chunk_latency_p50_ms`` / ``chunk_latency_p99_ms``: time to encode one 1 ms chunk (all channels
  of the stream; for N1 the files' first seconds side by side as one multichannel stream).
  cortexlink's encoder streams (its state carries from chunk to chunk); the peers compress each
  chunk on its own, which is what they can do with a chunk as it arrives.
- ``lossless``: every sample decoded and compared.

``cortexlink`` is the codec's default (fixed predictors, context-modelled range coding);
``cortexlink-rice`` the same prediction with adaptive Golomb-Rice codes (faster, larger);
``cortexlink-lms`` LMS prediction with a fully modelled range coder (smallest, slowest);
``cortexlink-lms-8s`` the same in 8 s frames (storage: one frame per N1 file, fewer frame
headers and table sections; the latency row still streams 1 ms chunks); ``cortexlink-lms-fast``
and ``cortexlink-lms-fast-8s`` the same LMS prediction with the multi-symbol coder of
``cortexlink.codec._lmsfast`` (channel-parallel; one range-coded letter per sample).

Peers: zlib, xz and bz2 at their best level, zstd at levels 3 and 19 (``zstandard``); FLAC at its
best compression level (``flac-8``: libFLAC through ``soundfile``/libsndfile, whose
``compression_level=1.0`` is FLAC's level 8; FLAC streams hold at most 8 channels, so wider
data is coded as one FLAC stream per 8 channels, each prefixed by its 4-byte length, counted in
the size); python-blosc2 with zstd at clevel 9 and its best plain filter for int16 on these data
(``blosc2-zstd-shuffle``: byte shuffle; bit shuffle alone was smaller on neither dataset) and with
its delta filter (``blosc2-zstd-delta-bitshuffle``: blosc's delta is an XOR, of each value with
the one before in the first block and with the first block's in later ones; with bit shuffle,
its best pairing on the N1 files). A peer whose package is missing is listed under ``skipped``
with the reason. The latency loop times up to ``LATENCY_CHUNKS`` chunks but stops after
``LATENCY_BUDGET_S`` seconds once ``LATENCY_MIN_CHUNKS`` are timed (``latency_chunks``: how many).

cortexlink encodes the N1 files in frames of 1 s (a resynchronisation point every 8 frames) and
the simulated data in 1 ms frames (one 1 ms chunk per frame, as it streams); the peers compress
each file (or the whole simulated array) in one call.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import struct
import sys
import time
import wave
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

from .dsp import machine_info

CODECS = ("cortexlink", "cortexlink-rice", "cortexlink-lms", "cortexlink-lms-8s", "cortexlink-lms-fast",
          "cortexlink-lms-fast-8s", "zlib-9", "xz-9", "bz2-9",
          "zstd-3", "zstd-19", "flac-8",
          "blosc2-zstd-shuffle", "blosc2-zstd-delta-bitshuffle")
#: FLAC's format allows at most 8 channels: wider arrays are coded as FLAC streams of 8 channels.
FLAC_MAX_CHANNELS = 8
N1_FRAME_S = 1.0
#: Frames of the storage variant ``cortexlink-lms-8s`` (longer than an N1 file: one frame per file).
STORAGE_FRAME_S = 8.0
#: cortexlink's variants: entropy coder, and frame length in seconds (None: the dataset's).
CORTEXLINK_VARIANTS = {"cortexlink": ("range", None), "cortexlink-rice": ("rice", None),
                       "cortexlink-lms": ("lms", None), "cortexlink-lms-8s": ("lms", STORAGE_FRAME_S),
                       "cortexlink-lms-fast": ("lms-fast", None),
                       "cortexlink-lms-fast-8s": ("lms-fast", STORAGE_FRAME_S)}
N1_RESYNC_FRAMES = 8
SIM_RESYNC_FRAMES = 100
LATENCY_CHUNKS = 2000
#: The latency loop stops after this many seconds (at least LATENCY_MIN_CHUNKS chunks): a slow peer
#: (FLAC at 1,024 channels: 128 FLAC streams per chunk) would otherwise take minutes.
LATENCY_BUDGET_S = 5.0
LATENCY_MIN_CHUNKS = 100


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

def _bytes_peer(comp: Callable[[bytes], bytes], decomp: Callable[[bytes], bytes]) -> tuple[Callable, Callable]:
    return ((lambda a: comp(a.tobytes())),
            (lambda b, shape: np.frombuffer(decomp(b), np.int16).reshape(shape)))


def _peer(name: str, fs_hz: float) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes, tuple], np.ndarray]] | str:
    """(compress an int16 array, decompress to an array of a shape) of a peer, or why it is not
    available."""
    if name == "zlib-9":
        return _bytes_peer(lambda b: zlib.compress(b, 9), zlib.decompress)
    if name == "xz-9":
        return _bytes_peer(lambda b: lzma.compress(b, preset=9), lzma.decompress)
    if name == "bz2-9":
        return _bytes_peer(lambda b: bz2.compress(b, 9), bz2.decompress)
    if name.startswith("zstd-"):
        try:
            import zstandard
        except ImportError:
            return "zstandard is not installed (pip install 'cortexlink[bench]')"
        c = zstandard.ZstdCompressor(level=int(name.split("-")[1]), threads=0)
        d = zstandard.ZstdDecompressor()
        return _bytes_peer(c.compress, d.decompress)
    if name == "flac-8":
        return _flac(fs_hz)
    if name.startswith("blosc2-"):
        return _blosc2(name)
    raise ConfigError(f"unknown codec {name!r}; codecs are {', '.join(CODECS)}")


def _flac(fs_hz: float) -> tuple[Callable, Callable] | str:
    try:
        import soundfile
    except (ImportError, OSError) as exc:   # OSError: the wheel's libsndfile could not be loaded
        return (f"soundfile (>= 0.13) is not installed or its libsndfile is missing ({exc}; "
                "pip install 'cortexlink[bench]')")
    if "FLAC" not in soundfile.available_formats():
        return f"this libsndfile ({soundfile.__libsndfile_version__}) has no FLAC support"
    rate = int(round(fs_hz))

    def one(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        soundfile.write(buf, x, rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
        return buf.getvalue()

    def comp(a: np.ndarray) -> bytes:
        a = a.reshape(a.shape[0], -1)
        if a.shape[1] <= FLAC_MAX_CHANNELS:
            return one(a)
        parts = [one(np.ascontiguousarray(a[:, c:c + FLAC_MAX_CHANNELS]))
                 for c in range(0, a.shape[1], FLAC_MAX_CHANNELS)]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)

    def decomp(blob: bytes, shape: tuple) -> np.ndarray:
        nc = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        if nc <= FLAC_MAX_CHANNELS:
            return soundfile.read(io.BytesIO(blob), dtype="int16", always_2d=True)[0].reshape(shape)
        out, pos = [], 0
        while pos < len(blob):
            (size,) = struct.unpack_from("<I", blob, pos)
            out.append(soundfile.read(io.BytesIO(blob[pos + 4:pos + 4 + size]), dtype="int16", always_2d=True)[0])
            pos += 4 + size
        return np.concatenate(out, axis=1).reshape(shape)

    return comp, decomp


def _blosc2(name: str) -> tuple[Callable, Callable] | str:
    try:
        import blosc2
    except ImportError:
        return "python-blosc2 is not installed (pip install 'cortexlink[bench]')"
    f = blosc2.Filter
    filters = [f.DELTA, f.BITSHUFFLE] if name.endswith("delta-bitshuffle") else [f.SHUFFLE]
    cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 9, "typesize": 2, "filters": filters,
               "filters_meta": [0] * len(filters), "nthreads": 1}
    return ((lambda a: blosc2.compress2(a.tobytes(), **cparams)),
            (lambda b, shape: np.frombuffer(blosc2.decompress2(b, nthreads=1), np.int16).reshape(shape)))


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _latencies(encode_chunk: Callable[[np.ndarray], bytes], stream: np.ndarray,
               chunk: int) -> tuple[float, float, int]:
    """p50 and p99 of the time to encode one chunk, and how many chunks were timed."""
    times: list[float] = []
    start = time.perf_counter()
    for i in range(0, min(stream.shape[0] - chunk + 1, LATENCY_CHUNKS * chunk), chunk):
        part = stream[i:i + chunk]
        t0 = time.perf_counter()
        encode_chunk(part)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if len(times) >= LATENCY_MIN_CHUNKS and t1 - start > LATENCY_BUDGET_S:
            break
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(times)


def _measure(name: str, dataset: dict) -> dict:
    """One codec on one dataset: sizes, throughput, latency and a sample-by-sample check."""
    from cortexlink import codec

    arrays: list[np.ndarray] = dataset["arrays"]
    raw = sum(a.nbytes for a in arrays)
    stream, chunk = dataset["latency_stream"], dataset["chunk_samples"]
    if name in CORTEXLINK_VARIANTS:
        entropy, frame_s = CORTEXLINK_VARIANTS[name]
        frame, resync = dataset["frame_samples"], dataset["resync_frames"]
        if frame_s is not None:
            frame = int(round(frame_s * dataset["fs_hz"]))
        blobs, t_enc = _timed(lambda: [codec.encode_array(a, chunk_samples=frame, resync_frames=resync,
                                                          entropy=entropy) for a in arrays])
        decoded, t_dec = _timed(lambda: [codec.decode_array(b) for b in blobs])
        enc = codec.Encoder(stream.shape[1], resync_frames=resync, entropy=entropy)
        p50, p99, n_lat = _latencies(enc.encode, stream, chunk)
    else:
        peer = _peer(name, dataset["fs_hz"])
        if isinstance(peer, str):
            return {"codec": name, "dataset": dataset["name"], "skipped": peer}
        comp, decomp = peer
        blobs, t_enc = _timed(lambda: [comp(a) for a in arrays])
        decoded, t_dec = _timed(lambda: [decomp(b, a.shape) for b, a in zip(blobs, arrays)])
        p50, p99, n_lat = _latencies(comp, stream, chunk)
    lossless = len(decoded) == len(arrays) and all(
        d.dtype == np.int16 and d.size == a.size and np.array_equal(d.reshape(a.shape), a)
        for d, a in zip(decoded, arrays))
    packed = sum(len(b) for b in blobs)
    return {"codec": name, "dataset": dataset["name"], "ratio": round(dataset["original_bytes"] / packed, 4),
            "compressed_bytes": packed, "encode_mb_s": _sig(raw / t_enc / 1e6),
            "decode_mb_s": _sig(raw / t_dec / 1e6), "chunk_latency_p50_ms": _sig(p50),
            "chunk_latency_p99_ms": _sig(p99), "latency_chunks": n_lat, "lossless": bool(lossless)}


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

    warm = np.arange(512, dtype=np.int16).reshape(256, 2) * 64
    frozen = warm.copy()
    frozen.flags.writeable = False          # WAV samples and the simulator's arrays are read-only:
    for entropy in codec.ENTROPY_CODERS:   # numba compiles apart for them; load every kernel before
        for a in (warm, frozen):           # anything is timed
            codec.decode_array(codec.encode_array(a, entropy=entropy))
    biggest = max(sum(a.nbytes for a in ds["arrays"]) for ds in datasets)
    touched = np.ones(min(3 * biggest, 1 << 30), np.uint8)    # fault pages in once (see the module doc)
    del touched
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
        print(f"  {'codec':<30}{'ratio':>8}{'enc MB/s':>10}{'dec MB/s':>10}{'1ms p50 ms':>12}"
              f"{'p99 ms':>9}  lossless", file=out)
        for r in result["results"]:
            if r["dataset"] == ds["name"]:
                print(f"  {r['codec']:<30}{r['ratio']:>8.3f}{r['encode_mb_s']:>10.1f}{r['decode_mb_s']:>10.1f}"
                      f"{r['chunk_latency_p50_ms']:>12.4f}{r['chunk_latency_p99_ms']:>9.4f}  {r['lossless']}",
                      file=out)
    for s in result.get("skipped", []):
        print(f"skipped {s['codec']} on {s['dataset']}: {s['skipped']}", file=out)
