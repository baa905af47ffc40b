"""``cortexlink sort PATH --out DIR``: spike-sort one recording (issue 15 §1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cortexlink.sorting.merging import DEFAULT_MERGE, MERGE_PRESETS

    p = sub.add_parser(
        "sort", help="spike-sort one recording: units.nwb, quality metrics, curation labels, report.html",
        description="Sorts one recording into single units with a SpikeInterface sorter and writes DIR/units.nwb "
                    "(NWB Units table: spike times, electrodes, mean waveforms, every quality metric, a curation "
                    "label and its reason per unit), DIR/sorting/ and DIR/analyzer/ (SpikeInterface folders), "
                    "DIR/metrics.csv, DIR/report.html (drift map, metric histograms, per-unit waveform, ISI "
                    "histogram and amplitude over time; figures in DIR/report/) and DIR/summary.json (sorter, "
                    "parameters, units by label, timings, peak memory). The recording is filtered (300-6000 Hz) "
                    "and common-median referenced (8 channels or more), and read in 1 s chunks throughout: memory stays bounded. "
                    "Units are labelled good / mua / noise by thresholds on SpikeInterface's metrics (defaults: "
                    "snr >= 4, isi_violations_ratio <= 0.5, presence_ratio >= 0.8, firing_rate >= 1 Hz, "
                    "amplitude_cutoff <= 0.1; snr < 2 or fewer than 10 spikes: noise).",
        epilog="Examples: cortexlink sort runs/session1 --out sorted1; cortexlink sort rec.nwb --out s "
               "--sorter tridesclous2 --rule snr_min=5; cortexlink sort --list-sorters")
    p.add_argument("path", type=Path, nargs="?", metavar="PATH",
                   help="a session folder recorded with raw samples, an NWB file, or any recording the importers "
                        "read (SpikeGLX, Open Ephys, Blackrock, Intan, WAV, raw + JSON sidecar)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder: new or empty (not a system folder nor inside a session)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of a previous `cortexlink sort` in DIR (any other content is refused)")
    p.add_argument("--sorter", default=None, metavar="NAME",
                   help="kilosort4, tridesclous2, spykingcircus2, mountainsort5, simple or lupin (default: the "
                        "first of these that runs here; simple and lupin never are while another runs; "
                        "see --list-sorters)")
    p.add_argument("--list-sorters", action="store_true", help="print which sorters run here (and why not) and exit")
    p.add_argument("--params", type=Path, default=None, metavar="FILE",
                   help="YAML or JSON of the sorter's own parameters (SpikeInterface names)")
    p.add_argument("--curation", type=Path, default=None, metavar="FILE.yaml",
                   help="YAML of curation thresholds (snr_min, isi_violations_ratio_max, presence_ratio_min, "
                        "firing_rate_min_hz, amplitude_cutoff_max, noise_snr_max, noise_min_spikes)")
    p.add_argument("--rule", action="append", default=[], metavar="KEY=VALUE",
                   help="one curation threshold, over the defaults and --curation (repeatable)")
    p.add_argument("--merge", default=DEFAULT_MERGE, metavar="PRESET",
                   help="merge units the sorter split (drift splits a neuron in two): SpikeInterface's auto-merge "
                        f"preset, one of {', '.join(MERGE_PRESETS)} (default {DEFAULT_MERGE}), or none")
    p.add_argument("--matching", default="auto", metavar="auto|own|KEY=V,...",
                   help="the sorter's template-matching settings: auto (default: for tridesclous2 spikes down to "
                        "0.5 of their unit's template and peaks over 4 noise SDs, so a bursting neuron's smaller "
                        "later spikes are kept; other sorters their own), own (the sorter's), or "
                        "min_amplitude=A,detect_threshold=T over auto")
    p.add_argument("--motion", action="store_true",
                   help="correct drift (the sorter's own correction where it has one, SpikeInterface's otherwise)")
    p.add_argument("--format", default=None, help="the importer format (default: detected)")
    p.add_argument("--stream", default=None, help="the importer stream (e.g. imec0.ap, an ElectricalSeries name)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="sort the complete samples of a truncated file or an unclosed session instead of refusing")
    p.add_argument("--n-jobs", type=int, default=1, metavar="N", help="worker processes for chunked steps (default 1)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS/OpenMP threads per process (default 1: more oversubscribes a busy machine)")
    p.add_argument("--no-pca-metrics", action="store_true",
                   help="skip the PCA metrics (silhouette, nn_hit_rate, d_prime, isolation_distance, l_ratio)")
    p.add_argument("--species", default=None,
                   help="the subject's species for units.nwb (e.g. 'Homo sapiens'; default: from the session, "
                        "else left empty)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--keep-cache", action="store_true",
                   help="keep DIR/cache (a session's decoded raw samples) and DIR/sorter (the sorter's work folder)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the short summary")
    p.set_defaults(func=run)


def _params(path: Path | None) -> dict | None:
    from cortexlink.core.errors import ConfigError
    from cortexlink.core.yamlfile import read_yaml_file

    if path is None:
        return None
    d = read_yaml_file(path, what="--params file")        # YAML is a superset of JSON
    if not isinstance(d, dict):
        raise ConfigError(f"--params {path} must hold a mapping of sorter parameters; got {type(d).__name__}")
    return d


def run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError

    if args.list_sorters:
        from cortexlink.sorting.sorters import available_sorters
        av = available_sorters()
        if args.json:
            print(json.dumps(av, indent=1))
        else:
            for name, why in av.items():
                print(f"{name:15s} {'available' if why is None else 'unavailable: ' + why}")
        return 0
    if args.path is None or args.out is None:
        raise ConfigError("sort needs PATH and --out DIR (or --list-sorters)")
    from cortexlink.sorting.curation import CurationRules
    from cortexlink.sorting.pipeline import sort_recording

    rules = CurationRules.from_yaml(args.curation) if args.curation is not None else CurationRules()
    rules = rules.with_overrides(args.rule)
    progress = sys.stderr.isatty()
    summary = sort_recording(args.path, args.out, sorter=args.sorter, params=_params(args.params), rules=rules,
                             format=args.format, stream=args.stream, motion=args.motion, n_jobs=args.n_jobs,
                             threads=args.threads, progress=progress, overwrite=args.overwrite,
                             allow_truncated=args.allow_truncated, keep_cache=args.keep_cache,
                             report=not args.no_report, pca_metrics=not args.no_pca_metrics, species=args.species,
                             merge=args.merge, matching=args.matching)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 0
    c = summary["n_units_by_label"]
    rec = summary["recording"]
    print(f"sorted {summary['source']} ({rec['n_channels']} channels, {rec['duration_s']:.1f} s) with "
          f"{summary['sorter']} in {summary['timings_s']['total_s']:.1f} s: {summary['n_units']} units "
          f"({c['good']} good, {c['mua']} mua, {c['noise']} noise; {len(summary['merge']['groups'])} merges); "
          f"peak RSS {summary['peak_rss_mb']['self']:.0f} MB")
    print(f"  {Path(args.out) / 'units.nwb'}" + ("" if args.no_report else f", {Path(args.out) / 'report.html'}"))
    return 0
