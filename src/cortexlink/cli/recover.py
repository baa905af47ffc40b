"""``cortexlink recover``: make a session folder consistent after a crash or damage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recover", help="make a session folder consistent after a crash or damage",
                       description="Takes the folder's lock (refused while a live process records into it), "
                                   "rebuilds a lost manifest from the stream headers and a damaged stream header "
                                   "from the manifest's copy, cuts a torn last record, moves damaged records aside "
                                   "(to corrupt/) while keeping every intact one, then writes counts and SHA-256 "
                                   "checksums into the manifest (state 'recovered') and verifies them. Checksums "
                                   "are recomputed only for files recover repaired itself: a file that no longer "
                                   "matches its recorded checksum and cannot be repaired (e.g. a decoder .npz) is "
                                   "left as it is and named, and the exit status is 1. A cleanly closed folder "
                                   "that verifies is left as it is.")
    p.add_argument("folder", type=Path, help="the session folder")
    p.add_argument("--catalogue", default=None, help="SQLite catalogue to register the session in "
                   "(default: $CORTEXLINK_CATALOGUE or ~/.cortexlink/catalogue.sqlite; 'none' to skip)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cortexlink.io.catalogue import default_catalogue_path
    from cortexlink.io.session_log import recover, verify_session

    cat = (False if (args.catalogue or "").lower() == "none"
           else (args.catalogue or default_catalogue_path()))
    rep = recover(args.folder, catalogue=cat)
    ver = verify_session(args.folder)
    out = {"folder": str(args.folder), "state": rep["state"], "changed": rep["changed"], "streams": rep["streams"],
           "files": rep["files"], "actions": rep["actions"], "verified": ver["ok"], "problems": ver["problems"]}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        what = ("recovered" if rep["changed"] else "already consistent, nothing changed" if ver["ok"]
                else "nothing recover can repair, left as it is")
        print(f"{args.folder}: {what} (state {rep['state']}); checksums {'verified' if ver['ok'] else 'NOT verified'}")
        for a in rep["actions"]:
            print(f"  {a}")
        for name, s in rep["streams"].items():
            hdr = "" if s.get("header", "intact") == "intact" else f"; header {s['header']}"
            print(f"  {name}: {s['records']} intact records, {s['rows']} rows{hdr}")
        for pr in ver["problems"]:
            print(f"  problem: {pr}")
    return 0 if ver["ok"] else 1
