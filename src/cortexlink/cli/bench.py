"""``cortexlink bench …``: benchmarks that print JSON; peers are measured side by side in one run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT_HELP = ("also write the JSON to this file (a file that exists is replaced only if it holds a JSON object; "
            "never a system location nor a file in a session folder)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures (JSON with --json)",
                       description="Benchmarks. Each measures cortexlink and its peers in the same run "
                                   "on the same data and reports ratios; figures depend on the machine.")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True

    d = bsub.add_parser("dsp", help="feature-extraction throughput and spike-detection accuracy",
                        description="Streams simulated (or real, with --data) broadband data through "
                                    "cortexlink's feature chain, a plain scipy reference and "
                                    "SpikeInterface's chain, each in its own single-threaded process; "
                                    "reports samples/s, real-time channels at 30 kHz, peak RSS, and "
                                    "detection recall/precision against the simulator's ground truth.")
    d.add_argument("--channels", type=int, nargs="+", default=[1024, 4096], help="channel counts (default: 1024 4096)")
    d.add_argument("--seconds", type=float, default=3.0, help="seconds of simulated data per channel count (default: 3)")
    d.add_argument("--chunk-ms", type=float, default=1.0, help="chunk size fed to cortexlink's streaming chain (default: 1 ms)")
    d.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    d.add_argument("--peers", nargs="+", default=["cortexlink", "scipy_reference", "spikeinterface"],
                   help="implementations to run (default: all three); cortexlink_units adds the chain with "
                        "sorted-unit template matching (simulated data only)")
    d.add_argument("--data", type=Path, default=None,
                   help="folder of real recordings (e.g. ../shared/data/n1_broadband, one WAV per electrode)")
    d.add_argument("--cores", nargs="+", default=None, metavar="N",
                   help="also run cortexlink with its channels split over N cores (numba threads) for each N "
                        "(integers or 'all'; 1 is always added as the baseline): real-time channels, speed-up "
                        "over 1 core and whether the output is identical, per channel count")
    d.add_argument("--cores-sweep", action="store_true",
                   help="--cores 1 2 4 ... all: every power of two up to and including all cores")
    d.add_argument("--json", action="store_true", help="print the result as JSON only")
    d.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    d.set_defaults(func=_run_dsp)

    from cortexlink.cli._bench_decode import add_parser as add_decode

    add_decode(bsub, OUT_HELP, _run_decode)

    cl = bsub.add_parser("closed-loop", help="Webgrid bits per second per decoder, channel count, grid and seed",
                         description="Closed-loop Webgrid (click to select) with a simulated participant: each "
                                     "decoder (Wiener, Kalman, ReFIT-Kalman, GRU) is calibrated open loop on the "
                                     "labels a lab records (direction to the target at the cursor's speed, lag "
                                     "from the data), given a speed gain set from its measured rest noise (Kalman kinds: "
                                     "a 60 ms velocity prior instead of the autopilot's dynamics), and "
                                     "evaluated closed loop at each channel count, grid and seed, beside the "
                                     "perfect-decoder ceiling (cursor = intent). Variants change one thing each "
                                     "(ablations, or the participant's delay, feedback gain and motor noise +-20%).")
    cl.add_argument("--channels", type=int, nargs="+", default=[96, 256, 1024], help="channel counts (default: 96 256 1024)")
    cl.add_argument("--decoders", nargs="+", default=["perfect", "wiener", "kalman", "refit_kalman", "gru"],
                    help="decoders (default: perfect wiener kalman refit_kalman gru)")
    cl.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    cl.add_argument("--eval-s", type=float, default=60.0, help="seconds of each evaluation block (default: 60)")
    cl.add_argument("--calibration-s", type=float, default=60.0, help="seconds of open-loop calibration (default: 60)")
    cl.add_argument("--grids", type=int, nargs="+", default=[30], help="Webgrid sizes N (NxN; default: 30)")
    cl.add_argument("--variants", nargs="+", default=["default"],
                    help="configurations: default, no_speed_gain, fitted_dynamics, refit_closed_loop_only, refit_current_cursor, dwell_fallback, oracle_labels, cursor_labels, slow_autopilot, no_click_freeze, "
                         "observe_as_self, bias_correction, smoothbatch, refit_dynamics, delay+20, delay-20, gain+20, gain-20, noise+20, noise-20 (default: default)")
    cl.add_argument("--sensitivity", action="store_true",
                    help="add the participant's delay, feedback gain and motor noise +-20%% variants")
    cl.add_argument("--preset", default="cortex",
                    help="implant preset at every channel count (default: cortex, one family whose decoding "
                         "saturates like cortex); legacy: monkey_m1_utah96 at 96 ch and default otherwise")
    cl.add_argument("--json", action="store_true", help="print the result as JSON only")
    cl.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    cl.set_defaults(func=_run_closed_loop)

    rc = bsub.add_parser("record", help="raw recording throughput at 30 kHz while a real-time loop keeps pace",
                         description="Feeds 1 ms chunks of simulated int16 broadband at wall-clock pace to the "
                                     "session recorder (and, side by side, to an HDF5 file appended on the "
                                     "real-time thread) and reports dropped items, MB/s written, peak queue, "
                                     "the time write calls take on the real-time thread and missed deadlines.")
    rc.add_argument("--channels", type=int, nargs="+", default=[1024, 4096], help="channel counts (default: 1024 4096)")
    rc.add_argument("--seconds", type=float, default=20.0, help="seconds recorded per run (default: 20)")
    rc.add_argument("--peers", nargs="+", default=["cortexlink", "h5py_inline"],
                    choices=["cortexlink", "cortexlink-rice", "cortexlink-range", "cortexlink-lms", "h5py_inline"],
                    help="writers to run (cortexlink-rice/-range/-lms: raw stored with the lossless codec; "
                         "default: cortexlink h5py_inline)")
    rc.add_argument("--dir", default=None, help="folder on the disk to measure (default: a temporary folder)")
    rc.add_argument("--json", action="store_true", help="print the result as JSON only")
    rc.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    rc.set_defaults(func=_run_record)

    rz = bsub.add_parser("redis-chunks", help="raw chunks over the Redis bus with and without the lossless codec",
                         description="Sends simulated int16 chunks (default 1,024 channels x 30 samples, 1 ms at "
                                     "30 kHz) from one Redis bus to a second one on a private redis-server, one "
                                     "chunk at a time, with each chunk_codec: bytes per chunk in the stream, the "
                                     "round trip (publish, encode, XADD, XREAD, decode) p50/p99 and the MB/s one "
                                     "publisher/reader pair sustains; every chunk is compared with the one sent.")
    rz.add_argument("--codecs", nargs="+", default=["none", "rice", "range"], choices=["none", "rice", "range", "lms", "lms-fast"],
                    help="chunk codecs to measure (default: none rice range)")
    rz.add_argument("--channels", type=int, default=1024, help="channels per chunk (default: 1024)")
    rz.add_argument("--chunks", type=int, default=2000, help="chunks sent per codec (default: 2000)")
    rz.add_argument("--resync", type=int, default=32, help="chunks between resynchronisation points (default: 32)")
    rz.add_argument("--json", action="store_true", help="print the result as JSON only")
    rz.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    rz.set_defaults(func=_run_redis_chunks)

    ui = bsub.add_parser("ui", help="real-time loop latency with and without browsers on the operator UI",
                         description="Runs the operator UI's graph in closed loop (Webgrid, paced to "
                                     "the wall clock) with no browser, then one and three headless Chromium windows "
                                     "connected, interleaved; reports loop latency p50/p99/max, deadline misses and "
                                     "the snapshot rate each page received.")
    ui.add_argument("--seconds", type=float, default=30.0, help="measured seconds per condition (default: 30)")
    ui.add_argument("--channels", type=int, default=1024, help="electrodes (default: 1024)")
    ui.add_argument("--clients", type=int, nargs="+", default=[1, 3], help="browser windows to compare with none (default: 1 3)")
    ui.add_argument("--rounds", type=int, default=3, help="interleaved slices per condition (default: 3)")
    ui.add_argument("--calibration-s", type=float, default=30.0, help="calibration before the fit (default: 30)")
    ui.add_argument("--priorities", nargs="+", default=["normal", "realtime"], choices=["normal", "high", "realtime"],
                    help="scheduling of the graph's thread to measure each condition under (default: normal realtime)")
    ui.add_argument("--json", action="store_true", help="print the result as JSON only")
    ui.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    ui.set_defaults(func=_run_ui)

    ex = bsub.add_parser("export", help="NWB export throughput (MB/s) and peak memory on a long, wide session",
                         description="Writes a synthetic session folder (SimulatedImplant data tiled in time, raw "
                                     "int16 + 20 ms features) of MINUTES x CHANNELS, then exports it to NWB once "
                                     "per compression (gzip, lzf, none), each in a fresh process; reports seconds, "
                                     "MB/s read and written, file size, compression ratio and peak RSS. The "
                                     "default (10 min x 1024 channels) needs ~37 GB for the session plus the "
                                     "export; free space is checked first and everything is removed after.")
    ex.add_argument("--minutes", type=float, default=10.0, help="minutes of raw data (default: 10)")
    ex.add_argument("--channels", type=int, default=1024, help="channels (default: 1024)")
    ex.add_argument("--peers", nargs="+", default=["gzip"], choices=["gzip", "lzf", "none"],
                    help="compressions to export with (default: gzip, the export's default)")
    ex.add_argument("--chunk-seconds", type=float, default=1.0, help="raw seconds per write (default: 1)")
    ex.add_argument("--dir", default=None, help="folder for the session and the file (default: the temp folder)")
    ex.add_argument("--keep", action="store_true", help="keep the session folder and the files")
    ex.add_argument("--json", action="store_true", help="print the result as JSON only")
    ex.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    ex.set_defaults(func=_run_export)

    la = bsub.add_parser("latency", help="end-to-end loop latency on the runtime, in-process and across processes via Redis",
                         description="Plays pre-generated simulated data (1 ms chunks, paced by the wall clock) "
                                     "through the runtime graph source -> dsp -> decoder -> cursor, in one process "
                                     "(in-process bus) and over Redis Streams on a private redis-server, with dsp, "
                                     "decoder and cursor together in a second process (pipeline) and each in its own "
                                     "process (split); reports the latency from a chunk "
                                     "entering the graph to the cursor update (p50/p99/p99.9/max), missed deadlines "
                                     "(a chunk not processed before the next one is due) and per-hop times beside "
                                     "BRAND's published 0.6 ms.")
    la.add_argument("--channels", type=int, nargs="+", default=[1024, 4096], help="channel counts (default: 1024 4096)")
    la.add_argument("--buses", nargs="+", default=["inprocess", "redis"], choices=["inprocess", "redis"],
                    help="buses to measure (default: both)")
    la.add_argument("--seconds", type=float, default=60.0, help="measured seconds per condition (default: 60)")
    la.add_argument("--warmup-s", type=float, default=5.0,
                    help="seconds before measuring (extractor calibration, catching up after it; default: 5)")
    la.add_argument("--loop-s", type=float, default=1.0, help="seconds of pre-generated data, looped (default: 1)")
    la.add_argument("--redis", default="auto", metavar="auto|URL", help="Redis server (default: auto, a private one)")
    la.add_argument("--redis-layout", nargs="+", choices=["pipeline", "split"], default=["pipeline", "split"],
                    help="placements measured on Redis: pipeline: dsp, decoder and cursor together in one other "
                         "process (1 hop); split: each in its own process (3 hops) (default: both)")
    la.add_argument("--redis-socket", choices=["unix", "tcp"], default="unix",
                    help="how the processes reach the private server of --redis auto: a Unix domain socket "
                         "(default) or TCP on 127.0.0.1")
    la.add_argument("--pin", action="store_true",
                    help="pin processes to CPUs ('cpus' in the graph): the source and Redis share one, the dsp "
                         "gets its own (default: placement left to the OS scheduler)")
    la.add_argument("--json", action="store_true", help="print the result as JSON only")
    la.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    la.set_defaults(func=_run_latency)

    fa = bsub.add_parser("faults", help="the fault campaign: every fault survived, every bad input refused",
                         description="Runs each fault case (damaged recordings, killed processes and redis-server, "
                                     "full disks, hostile and malformed inputs to every entry point) in a child "
                                     "process of its own, bounded in time, and reports per case: survived, "
                                     "data_lost, cursor_halted_within_bins, exit_code, message_ok. Exits 1 when a "
                                     "case did not survive.")
    fa.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                    help="run only the cases whose name (glob) or area matches (default: all)")
    fa.add_argument("--list", action="store_true", help="list the cases and exit")
    fa.add_argument("--dir", type=Path, default=None,
                    help="keep each case's folder under this folder (default: a temporary folder, removed)")
    fa.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every case's time limit (a slow machine; default: 1)")
    fa.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    fa.add_argument("--json", action="store_true", help="print the result as JSON only")
    fa.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    fa.set_defaults(func=_run_faults)

    co = bsub.add_parser("codec", help="lossless compression of raw samples: ratio, MB/s, 1 ms chunk latency",
                         description="Compresses the N1 broadband WAV files (--data, default "
                                     "../shared/data/n1_broadband if present) and simulated 1,024-channel "
                                     "data at 30 kHz with cortexlink's codec and with zlib, xz, bz2, zstd, FLAC "
                                     "and blosc2, "
                                     "in one run on the same data; reports the ratio (original WAV bytes / "
                                     "compressed bytes for files, raw bytes / compressed for simulated data), "
                                     "encode and decode MB/s on one thread, the time to encode a 1 ms chunk "
                                     "(p50/p99), and whether every decoded sample is equal.")
    co.add_argument("--data", type=Path, default=None,
                    help="folder of mono int16 WAV files (default: ../shared/data/n1_broadband if present)")
    co.add_argument("--no-data", action="store_true", help="simulated data only, even if the N1 folder is present")
    co.add_argument("--channels", type=int, default=None,
                    help="simulated channels (default: 1024; with --near-lossless 256)")
    co.add_argument("--seconds", type=float, default=None,
                    help="seconds of simulated data (default: 2; with --near-lossless 5)")
    co.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    co.add_argument("--codecs", nargs="+", default=None, metavar="CODEC",
                    help="subset of cortexlink cortexlink-rice cortexlink-lms cortexlink-lms-8s zlib-9 xz-9 "
                         "bz2-9 zstd-3 zstd-19 flac-8 blosc2-zstd-shuffle blosc2-zstd-delta-bitshuffle "
                         "(default: all)")
    co.add_argument("--near-lossless", action="store_true",
                    help="instead: the near-lossless curve, bits per sample against spike detection recall "
                         "(simulated, bounds in µV) and threshold-crossing agreement (N1, bounds in file counts); "
                         "with --out, also a PNG of the curve beside the JSON")
    co.add_argument("--errors-uv", type=float, nargs="+", default=None, metavar="UV",
                    help="--near-lossless: error bounds on simulated data, µV (default: 0 1 2 5 10 20 50)")
    co.add_argument("--n1-errors", type=float, nargs="+", default=None, metavar="COUNTS",
                    help="--near-lossless: error bounds on the N1 files, in file counts (default: "
                         "0 32 64 128 320 640 1280; one ADC step is ~64 counts)")
    co.add_argument("--closed-loop", action="store_true",
                    help="--near-lossless: also closed-loop Webgrid bps with the raw chunks through a near-lossless "
                         "link (one demo session per bound on 512 channels, 60 s of Webgrid; ~2-4 min each)")
    co.add_argument("--loop-errors-uv", type=float, nargs="+", default=None, metavar="UV",
                    help="--closed-loop: error bounds, µV (default: 0 2 5 10 20)")
    co.add_argument("--json", action="store_true", help="print the result as JSON only")
    co.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    co.set_defaults(func=_run_codec)

    qa = bsub.add_parser("quality", help="time and peak memory of `cortexlink quality` on EEG and implant data",
                         description="Runs the data-set quality report (every check, the baseline, figures, HTML) "
                                     "in a fresh process per data set: the EEG Motor Movement/Imagery folder "
                                     "(../shared/data/eeg_motor_imagery, skipped when absent) and a simulated "
                                     "implant session recorded without raw samples (1024 channels, 10 minutes; "
                                     "recorded once into --work, ~3 min, then reused); reports wall-clock "
                                     "seconds, peak RSS, findings and scores per data set against the goal of "
                                     "under 60 s each.")
    qa.add_argument("--eeg", type=Path, default=None, help="EEG folder (default: ../shared/data/eeg_motor_imagery)")
    qa.add_argument("--no-eeg", action="store_true", help="skip the EEG folder")
    qa.add_argument("--no-implant", action="store_true", help="skip the simulated implant session")
    qa.add_argument("--channels", type=int, default=1024, help="simulated electrodes (default: 1024)")
    qa.add_argument("--seconds", type=float, default=600.0,
                    help="simulated session length in seconds (default: 600; shorter records faster)")
    qa.add_argument("--work", type=Path, default=None,
                    help="folder for the cached session and the reports (default: <tmp>/cortexlink-bench-quality)")
    qa.add_argument("--permutations", type=int, default=100, help="baseline permutations (default: 100)")
    qa.add_argument("--no-baseline", action="store_true", help="skip the fitness checks")
    qa.add_argument("--json", action="store_true", help="print the result as JSON only")
    qa.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    qa.set_defaults(func=_run_quality)

    sp = bsub.add_parser("speech", help="brain-to-text: phoneme and word error rates, words/min, real-time factor",
                         description="Runs speech sessions on the runtime graph with the simulated speaking "
                                     "participant: calibration sentences (from the 620 training Harvard sentences), "
                                     "a CTC phoneme-decoder fit, then the 100 held-out sentences decoded live with "
                                     "the lexicon beam search (whole CMU dictionary) with and without the n-gram "
                                     "language model built from the Gutenberg books. Needs ../shared/data/text_corpus "
                                     "(or CORTEXLINK_SHARED_DATA). Slow: a 256-electrode run simulates ~40 minutes "
                                     "of speech at 30 kHz.")
    sp.add_argument("--electrodes", type=int, nargs="+", default=[64, 128, 256, 1024],
                    help="electrode counts (default: 64 128 256 1024)")
    sp.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    sp.add_argument("--calibration-sentences", type=int, default=400,
                    help="calibration sentences attempted before the fit (default: 400)")
    sp.add_argument("--test-sentences", type=int, default=100, help="held-out sentences (default: 100)")
    sp.add_argument("--json", action="store_true", help="print the result as JSON only")
    sp.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    sp.set_defaults(func=_run_speech)

    st = bsub.add_parser("stim", help="stimulation: interlock fuzz (unsafe pulses emitted), its cost, false "
                                      "crossings through stimulation, CIS intelligibility",
                         description="Fuzzes the safety interlock with random and malicious plans (NaN, negative, "
                                     "huge, unbalanced, unknown electrodes, timing overlaps...) through the driver "
                                     "and the simulated stimulator, re-checking every delivered pulse with an "
                                     "independent verifier; measures the interlock's cost per plan on ordinary CIS "
                                     "and touch plans; false threshold crossings per second with and without "
                                     "artefact removal and the spikes lost to blanking; STOI of the CIS "
                                     "resynthesis by channel count and rate on espeak-ng sentences.")
    st.add_argument("--plans", type=int, default=100_000, help="fuzz plans (default: 100000)")
    st.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    st.add_argument("--artifact-channels", type=int, default=64, help="channels of the artefact run (default: 64)")
    st.add_argument("--artifact-seconds", type=float, default=10.0, help="seconds of stimulation (default: 10)")
    st.add_argument("--no-auditory", action="store_true", help="skip the CIS intelligibility table")
    st.add_argument("--closed-loop", action="store_true",
                    help="also closed-loop centre-out with touch feedback through the whole stack (4 variants "
                         "x --seeds; ~40 s a session here)")
    st.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of --closed-loop (default: 0 1 2)")
    st.add_argument("--json", action="store_true", help="print the result as JSON only")
    st.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    st.set_defaults(func=_run_stim)
    _add_sort_parser(bsub)
    _add_units_track_parser(bsub)
    _add_dataset_parser(bsub)
    from cortexlink.cli._bench_safety import add_parser as add_safety
    add_safety(bsub, OUT_HELP, _check_out, _emit)


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out or --dir this command may not write, before the benchmark runs (see core.outpath)."""
    if getattr(args, "dir", None) is not None:
        from cortexlink.core.outpath import check_output_dir

        check_output_dir(args.dir, what="--dir", create=False)
    if getattr(args, "out", None) is not None:
        from cortexlink.core.outpath import check_output_file, is_json_object_file

        check_output_file(args.out, what="--out", overwrite=True, ours=is_json_object_file,
                          ours_is="a JSON result file (a JSON object)", create_parent=False)


def _write_out(path: Path, text: str) -> None:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.outpath import check_output_file, is_json_object_file

    check_output_file(path, what="--out", overwrite=True, ours=is_json_object_file,
                      ours_is="a JSON result file (a JSON object)")
    try:
        path.write_text(text + "\n")
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot be written ({exc.strerror or exc})") from None


def _emit(result: dict, args: argparse.Namespace, summary) -> int:
    text = json.dumps(result, indent=2)
    if args.out:
        _write_out(args.out, text)
    if args.json:
        print(text)
    else:
        summary(result)
    return 0


def _run_dsp(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import dsp

    if args.data is not None:
        result = dsp.run_real(args.data, chunk_ms=args.chunk_ms, peers=args.peers, progress=not args.json)
    else:
        cores = list(args.cores or [])
        if args.cores_sweep:
            cores += dsp.sweep_cores()
        result = dsp.run(channels=args.channels, seconds=args.seconds, chunk_ms=args.chunk_ms,
                         seed=args.seed, peers=args.peers, progress=not args.json, cores=cores or None)
    return _emit(result, args, dsp.print_summary)


def _run_decode(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.cli._bench_decode import run as run_decode

    return run_decode(args, _emit)


def _run_closed_loop(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import closed_loop

    variants = list(dict.fromkeys(list(args.variants) + (list(closed_loop.SENSITIVITY) if args.sensitivity else [])))
    result = closed_loop.run(channels=args.channels, decoders=args.decoders, seeds=args.seeds,
                             eval_s=args.eval_s, calibration_s=args.calibration_s, grids=args.grids,
                             variants=variants, preset=None if args.preset == "legacy" else args.preset,
                             progress=not args.json)
    return _emit(result, args, closed_loop.print_summary)


def _print_record(result: dict) -> None:
    print(f"{'peer':16s} {'ch':>5s} {'in MB/s':>8s} {'disk MB/s':>9s} {'ratio':>6s} {'dropped':>8s} {'queue MB':>8s} "
          f"{'close s':>7s} {'call p50 us':>11s} {'p99 us':>8s} {'max us':>9s} {'missed':>7s}")
    for r in result["results"]:
        w = r["write_call"]
        print(f"{r['peer']:16s} {r['channels']:5d} {r['input_mb_s']:8.1f} {r['written_mb_s']:9.1f} {r['ratio']:6.2f} "
              f"{r['dropped_items']:8d} {r['max_queue_mb']:8.1f} {r['close_s']:7.2f} {w['p50_us']:11.1f} "
              f"{w['p99_us']:8.1f} {w['max_us']:9.1f} {r['missed']:7d}")


def _print_redis_chunks(result: dict) -> None:
    print(f"{'codec':6s} {'bytes/chunk':>11s} {'ratio':>6s} {'rtt p50 us':>10s} {'p99 us':>8s} {'MB/s':>7s} "
          f"{'identical':>9s}")
    for r in result["results"]:
        rt = r["round_trip"]
        print(f"{r['codec']:6s} {r['bytes_per_chunk']:11.0f} {r['ratio']:6.3f} {rt['p50_us']:10.0f} {rt['p99_us']:8.0f} "
              f"{r['mb_s']:7.1f} {str(r['identical']):>9s}")


def _run_redis_chunks(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench.redis_roundtrip import run_bus_chunks
    from cortexlink.core.validation import check_positive

    for name in ("channels", "chunks", "resync"):
        check_positive(name, getattr(args, name), integer=True)
    result = run_bus_chunks(tuple(args.codecs), n_channels=args.channels, n_chunks=args.chunks,
                            resync_frames=args.resync)
    return _emit(result, args, _print_redis_chunks)


def _run_record(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import record

    result = record.run(channels=args.channels, seconds=args.seconds, peers=tuple(args.peers), out_dir=args.dir)
    return _emit(result, args, _print_record)


def _run_ui(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import ui

    result = ui.run(seconds=args.seconds, channels=args.channels, clients=tuple(args.clients), rounds=args.rounds,
                    calibration_s=args.calibration_s, priorities=tuple(args.priorities),
                    progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    return _emit(result, args, lambda r: print("\n".join(ui.summary_lines(r))))


def _run_export(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import export

    result = export.run(minutes=args.minutes, channels=args.channels, peers=args.peers,
                        chunk_seconds=args.chunk_seconds, workdir=args.dir, keep=args.keep, progress=not args.json)
    return _emit(result, args, lambda r: print("\n".join(export.summary_lines(r))))


def _run_latency(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import latency

    result = latency.run(channels=args.channels, buses=args.buses, seconds=args.seconds, warmup_s=args.warmup_s,
                         loop_s=args.loop_s, redis_url=args.redis, redis_layouts=args.redis_layout, pin=args.pin,
                         redis_socket=args.redis_socket,
                         progress=not args.json)
    return _emit(result, args, latency.print_summary)


def _run_codec(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import codec

    if args.near_lossless:
        from cortexlink.bench import codec_curve
        from cortexlink.core.errors import ConfigError

        if args.out is not None and args.out.suffix.lower() == ".png":
            raise ConfigError(f"--out {args.out}: give the JSON file's path; the plot is written beside it (.png)")

        result = codec_curve.run(data=args.data, use_default_data=not args.no_data,
                                 errors_uv=args.errors_uv or codec_curve.SIM_ERRORS_UV,
                                 n1_errors_counts=args.n1_errors or codec_curve.N1_ERRORS_COUNTS,
                                 channels=256 if args.channels is None else args.channels,
                                 seconds=5.0 if args.seconds is None else args.seconds, seed=args.seed,
                                 closed_loop=args.closed_loop, loop_errors_uv=args.loop_errors_uv,
                                 progress=not args.json and sys.stderr.isatty())
        if args.out:
            result["plot"] = str(codec_curve.plot(result, args.out.with_suffix(".png")))
        return _emit(result, args, codec_curve.print_summary)
    result = codec.run(data=args.data, use_default_data=not args.no_data,
                       channels=1024 if args.channels is None else args.channels,
                       seconds=2.0 if args.seconds is None else args.seconds, seed=args.seed, codecs=args.codecs,
                       progress=not args.json and sys.stderr.isatty())
    return _emit(result, args, codec.print_summary)


def _run_faults(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import faults
    from cortexlink.core.errors import ConfigError

    if args.timeout_scale <= 0:
        raise ConfigError(f"--timeout-scale must be > 0; got {args.timeout_scale:g}")
    if args.list:
        for c in faults.load_cases().values():
            print(f"{c.name:44s} {c.area:10s} {c.doc}")
        return 0
    result = faults.run(args.only, workdir=args.dir, timeout_scale=args.timeout_scale,
                        progress=not args.json and sys.stderr.isatty())

    def summary(r: dict) -> None:
        if args.markdown:
            print(faults.format_table(r))
        else:
            for c in r["cases"]:
                state = f"skipped ({c['skipped']})" if "skipped" in c else ("survived" if c["survived"] else "FAILED")
                print(f"{c['case']:44s} {state:10s} {c.get('detail', '')[:100]}")
        s = r["summary"]
        print(f"{s['n_survived']} of {s['n_ran']} cases survived ({s['n_skipped']} skipped), "
              f"{s['n_data_lost']} lost data")

    _emit(result, args, summary)
    return 0 if not result["summary"]["failed"] else 1


def _run_quality(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import quality

    if args.work is not None:
        from cortexlink.core.outpath import check_output_dir

        check_output_dir(args.work, what="--work")
    result = quality.run(eeg=args.eeg, use_default_eeg=not args.no_eeg, implant=not args.no_implant,
                         channels=args.channels, seconds=args.seconds, work=args.work,
                         baseline=not args.no_baseline, n_permutations=args.permutations, progress=not args.json)
    rc = _emit(result, args, quality.print_summary)
    return 1 if any("error" in r for r in result["results"]) else rc


def _run_speech(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import speech

    result = speech.run(electrodes=args.electrodes, seeds=args.seeds, calibration_sentences=args.calibration_sentences,
                        test_sentences=args.test_sentences, progress=not args.json)
    rc = _emit(result, args, speech.print_summary)
    return 1 if any("error" in r for r in result["results"]) else rc


def _run_stim(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.bench import stim

    if args.plans < 1:
        raise SystemExit("cortexlink bench stim: --plans must be >= 1")
    result = stim.run(n_plans=args.plans, seed=args.seed, artifact_channels=args.artifact_channels,
                      artifact_seconds=args.artifact_seconds, auditory=not args.no_auditory,
                      closed_loop=args.closed_loop, seeds=args.seeds, progress=not args.json)
    rc = _emit(result, args, stim.print_summary)
    return 1 if result["interlock"]["unsafe_pulses_emitted"] else rc


def _add_sort_parser(bsub: argparse._SubParsersAction) -> None:
    from cortexlink.cli._bench_sort import add_parser as add_sort

    add_sort(bsub, OUT_HELP, _run_sort)


def _run_sort(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.cli._bench_sort import run as run_sort

    return run_sort(args, _emit)


def _add_units_track_parser(bsub: argparse._SubParsersAction) -> None:
    from cortexlink.cli._bench_units_track import add_parser as add_units_track

    add_units_track(bsub, OUT_HELP, _run_units_track)


def _run_units_track(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.cli._bench_units_track import run as run_units_track

    return run_units_track(args, _emit)


def _add_dataset_parser(bsub: argparse._SubParsersAction) -> None:
    from cortexlink.cli._bench_dataset import add_parser as add_dataset

    add_dataset(bsub, OUT_HELP, _run_dataset)


def _run_dataset(args: argparse.Namespace) -> int:
    _check_out(args)
    from cortexlink.cli._bench_dataset import run as run_dataset

    return run_dataset(args, _emit)
