"""``cortexlink recover``: make a session folder consistent after a crash."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recover", help="make a session folder consistent after a crash",
                       description="Scans every stream of a session folder, cuts a torn last record, moves "
                                   "damaged records aside (to corrupt/) while keeping every intact one, then "
                                   "writes counts and SHA-256 checksums into the manifest (state 'recovered') "
                                   "and verifies them. A cleanly closed folder is only verified.")
    p.add_argument("folder", type=Path, help="the session folder")
    p.add_argument("--catalogue", default=None, help="SQLite catalogue to register the session in "
                   "(default: $CORTEXLINK_CATALOGUE or ~/.cortexlink/catalogue.sqlite; 'none' to skip)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.io.catalogue import default_catalogue_path
    from cortexlink.io.session_log import recover, verify

    cat = (False if (args.catalogue or "").lower() == "none"
           else (args.catalogue or default_catalogue_path()))
    rep = recover(args.folder, catalogue=cat)
    ver = verify(args.folder)
    out = {"folder": str(args.folder), "state": rep["state"], "changed": rep["changed"], "streams": rep["streams"],
           "verified": ver["ok"], "problems": ver["problems"]}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        what = "recovered" if rep["changed"] else "already consistent"
        print(f"{args.folder}: {what} (state {rep['state']}); checksums {'verified' if ver['ok'] else 'NOT verified'}")
        for name, s in rep["streams"].items():
            extra = f", cut {s['cut_bytes']} damaged bytes in {s['damaged_regions']} region(s)" if s.get("cut_bytes") else ""
            print(f"  {name}: {s['records']} records, {s['rows']} rows{extra}")
        for pr in ver["problems"]:
            print(f"  problem: {pr}")
    return 0 if ver["ok"] else 1
