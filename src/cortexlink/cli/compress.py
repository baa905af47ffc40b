"""``cortexlink compress IN OUT`` / ``cortexlink decompress IN OUT``: 16-bit PCM WAV files (or
folders of them), raw int16 files with a JSON sidecar, and session folders to ``.clz`` files of
the lossless codec and back (:mod:`cortexlink.codec.files`, :mod:`cortexlink.codec.rawfiles`,
:mod:`cortexlink.codec.folders`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compress", help="losslessly compress WAV / raw files, WAV folders or session folders",
                       description="Compress a 16-bit PCM WAV file (mono or multichannel) into a .clz file with "
                                   "cortexlink's lossless codec; or a raw file of interleaved little-endian int16 "
                                   "samples (samples x channels) described by a JSON sidecar of the same name "
                                   "ending in .json, e.g. rec.bin + rec.json = {\"channels\": 384, "
                                   "\"rate_hz\": 30000, \"dtype\": \"int16\"} (both kept in the .clz); or "
                                   "a cortexlink session folder (manifest.json, streams/) into one archive file "
                                   "(the raw stream's samples coded by the codec, every other file LZMA or "
                                   "stored); or every *.wav of another folder (not recursive) into a folder of "
                                   ".clz files. `cortexlink decompress` gives back the same files, byte for byte.")
    c.add_argument("input", type=Path, metavar="IN",
                   help="a WAV file, a raw file with its .json sidecar, a session folder, or a folder of *.wav files")
    c.add_argument("output", type=Path, metavar="OUT",
                   help="the .clz file (or session archive), or the folder of .clz files, to write")
    c.add_argument("--resync-frames", type=int, default=32, metavar="N",
                   help="a resynchronisation point every N codec frames (default: 32)")
    c.add_argument("--frame-s", type=float, default=1.0, metavar="S",
                   help="seconds per codec frame of a WAV or raw file (default: 1; e.g. 8 for storage: fewer "
                        "frame headers; session folders use ~1 s)")
    c.add_argument("--entropy", choices=["range", "rice", "lms", "lms-fast"], default="range",
                   help="entropy coder: range (default), rice (fastest, largest), lms (LMS prediction, "
                        "smaller, slower) or lms-fast (LMS prediction with multi-symbol coding: lms's size at "
                        "several times its speed on many channels)")
    _common(c, "a .clz file compress wrote")
    c.set_defaults(func=_run_compress)

    d = sub.add_parser("decompress", help="restore WAV / raw files or session folders from .clz files",
                       description="Decompress a .clz file into the WAV file it was made from, or into the raw "
                                   "file OUT and its sidecar (OUT with the suffix .json); a session archive into "
                                   "the folder OUT (new or empty); or every *.clz of a folder into a folder of "
                                   ".wav files. Every file comes back byte-identical; a damaged file (CRC-32 "
                                   "mismatch) is refused.")
    d.add_argument("input", type=Path, metavar="IN", help="a .clz file or session archive, or a folder of *.clz files")
    d.add_argument("output", type=Path, metavar="OUT",
                   help="the WAV or raw file, the session folder, or the folder of WAV files, to write")
    _common(d, "a WAV file")
    d.set_defaults(func=_run_decompress)


def _common(p: argparse.ArgumentParser, replaced: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace OUT (or files in it) if it exists and is {replaced}; without it an existing "
                        "OUT is refused")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")


class _Bar:
    """A tqdm bar over a folder's files on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, leave=False)
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(args: argparse.Namespace, run) -> int:
    bar = _Bar(sys.stderr.isatty())
    try:
        summary = run(bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        ratio = f"{summary['ratio']:.3f}x" if summary["ratio"] else "n/a"
        print(f"cortexlink {summary['mode']}: {summary['files']} file(s), {summary['original_bytes']:,} original "
              f"bytes, {summary['compressed_bytes']:,} compressed bytes, ratio {ratio} ({summary['input']} -> "
              f"{summary['output']}, {summary['seconds']:.2f} s)")
    sys.stdout.flush()
    return 0


def _run_compress(args: argparse.Namespace) -> int:
    from cortexlink.codec.files import compress_path

    return _report(args, lambda bar: compress_path(args.input, args.output, overwrite=args.overwrite,
                                                   resync_frames=args.resync_frames, entropy=args.entropy,
                                                   frame_s=args.frame_s, progress=bar))


def _run_decompress(args: argparse.Namespace) -> int:
    from cortexlink.codec.files import decompress_path

    return _report(args, lambda bar: decompress_path(args.input, args.output, overwrite=args.overwrite,
                                                     progress=bar))
