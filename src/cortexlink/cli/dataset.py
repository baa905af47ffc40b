"""``cortexlink dataset build INPUT... --out DIR``: a data set from many sessions, on Ray (issue 15 §4)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build a single-unit data set from many sessions (sorted in parallel on Ray)",
                       description="Data sets of sorted single units from many sessions.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    dsub.required = True
    b = dsub.add_parser(
        "build", help="sort, curate, track and export many sessions into one data set folder",
        description="Sorts and curates every session as one Ray task (a local Ray instance starts by itself; "
                    "--ray-address joins a cluster), tracks units across each participant's sessions, and writes "
                    "DIR/nwb/<participant>/<session>.nwb (Units table with a tracked_id column), DIR/units.parquet "
                    "(one row per unit: participant, session, day, unit id, tracked id, electrode, position, label, "
                    "every quality metric), DIR/SHA256SUMS and the data card DIR/datacard.json + .html (counts, SNR "
                    "and firing-rate distributions, days covered, provenance, licence, exclusions, throughput). "
                    "Resumable: a rerun skips sessions already sorted with the same input and configuration; a "
                    "session whose worker dies or whose sort fails is retried, then listed as excluded with why.",
        epilog="Examples: cortexlink dataset build runs/ --out ds --workers 2; cortexlink dataset build --catalogue "
               "sessions.db --participant P001 --out ds_p001 --sorter tridesclous2")
    b.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                   help="session folders, NWB files, recordings the importers read, or folders of them")
    b.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="data set folder: new, empty, or one a previous build wrote (resumed)")
    b.add_argument("--catalogue", type=Path, default=None, metavar="DB",
                   help="take the sessions of this catalogue (`cortexlink sessions`), with the INPUTs if any")
    b.add_argument("--participant", default=None, metavar="P", help="with --catalogue: this participant only")
    b.add_argument("--sorter", default=None, metavar="NAME",
                   help="a sorter of `cortexlink sort --list-sorters` (default: the best that runs here)")
    b.add_argument("--params", type=Path, default=None, metavar="FILE",
                   help="YAML or JSON of the sorter's own parameters (SpikeInterface names)")
    b.add_argument("--curation", type=Path, default=None, metavar="FILE.yaml", help="YAML of curation thresholds")
    b.add_argument("--rule", action="append", default=[], metavar="KEY=VALUE",
                   help="one curation threshold over the defaults and --curation (repeatable)")
    b.add_argument("--workers", type=int, default=None, metavar="N",
                   help="sessions sorted at once: the local Ray instance's CPUs (default: all cores)")
    b.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (e.g. auto, ray://head:10001) instead of starting a local instance")
    b.add_argument("--max-failures", type=int, default=3, metavar="N",
                   help="attempts per session (worker deaths and errors together) before it is excluded (default 3)")
    b.add_argument("--licence", default="CC-BY-4.0", metavar="L", help="licence named in the data card")
    b.add_argument("--name", default=None, help="data set name for the card (default: DIR's name)")
    b.add_argument("--no-pca-metrics", action="store_true", help="skip the PCA quality metrics")
    b.add_argument("--json", action="store_true", help="print the data card as JSON")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.cli.sort import _params
    from cortexlink.core.errors import ConfigError
    from cortexlink.sorting.curation import CurationRules
    from cortexlink.sorting.dataset import build_dataset, inputs_from_catalogue, inputs_from_paths

    if args.participant is not None and args.catalogue is None:
        raise ConfigError("--participant needs --catalogue DB")
    if not args.inputs and args.catalogue is None:
        raise ConfigError("dataset build needs INPUT paths or --catalogue DB; got neither")
    inputs = inputs_from_paths(args.inputs) if args.inputs else []
    if args.catalogue is not None:
        if not args.catalogue.is_file():
            raise ConfigError(f"--catalogue {args.catalogue}: no such catalogue file")
        inputs += inputs_from_catalogue(args.catalogue, args.participant)
    rules = CurationRules.from_yaml(args.curation) if args.curation is not None else CurationRules()
    rules = rules.with_overrides(args.rule)
    card = build_dataset(inputs, args.out, sorter=args.sorter, params=_params(args.params), rules=rules,
                         workers=args.workers, ray_address=args.ray_address, max_failures=args.max_failures,
                         progress=sys.stderr.isatty(), licence=args.licence, name=args.name,
                         pca_metrics=not args.no_pca_metrics)
    if args.json:
        print(json.dumps(card, indent=1, default=str))
        return 0
    c, b = card["counts"], card["build"]
    lab = c["units_by_label"]
    print(f"data set {args.out}: {c['sessions']} of {c['sessions_input']} sessions, {c['units']} units "
          f"({lab['good']} good, {lab['mua']} mua, {lab['noise']} noise), {c['tracked_units']} tracked units; "
          f"{b['n_sorted']} sorted now, {b['n_reused']} reused, {b['wall_s']:.1f} s")
    for e in card["excluded"]["sessions"]:
        print(f"  excluded {e['session_id']} after {e['attempts']} attempt(s): {e['reason']}")
    print(f"  {Path(args.out) / 'datacard.html'}, {Path(args.out) / 'units.parquet'}")
    return 0 if not card["excluded"]["sessions"] else 1
