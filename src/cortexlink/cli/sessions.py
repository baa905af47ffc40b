"""``cortexlink sessions``: the SQLite catalogue of participants, sessions, files and checksums."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sessions", help="list, show, register and verify catalogued sessions",
                       description="The session catalogue (SQLite; pseudonymous participant codes only). "
                                   "Default database: $CORTEXLINK_CATALOGUE or ~/.cortexlink/catalogue.sqlite.")
    p.add_argument("--db", type=Path, default=None, help="catalogue file (default: see above)")
    ssub = p.add_subparsers(dest="action", metavar="ACTION")
    ssub.required = True
    ls = ssub.add_parser("list", help="list sessions (optionally of one participant)")
    ls.add_argument("--participant", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    sh = ssub.add_parser("show", help="one session with its files and checksums")
    sh.add_argument("session", help="session id, id prefix or folder")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)
    rg = ssub.add_parser("register", help="add session folders to the catalogue",
                         description="Adds (or updates) each folder's session. A folder holding a session the "
                                     "catalogue already has at another folder that still holds it (a copy) is "
                                     "refused unless --copy is given; a session whose catalogued folder no longer "
                                     "holds it is moved to the new folder. Each line says which.")
    rg.add_argument("folders", type=Path, nargs="+")
    rg.add_argument("--copy", action="store_true", help="register a copy of a catalogued session as a distinct "
                    "entry <id>~copy<N> (the original's entry is left as it is)")
    rg.set_defaults(func=_register)
    vf = ssub.add_parser("verify", help="re-check every file's SHA-256, header and record checksums (one session "
                                        "or all)",
                         description="Re-checks each catalogued session's files against the SHA-256 stored in "
                                     "the catalogue, and its folder: the manifest, every file against the "
                                     "manifest, the decoders' checksums recorded as they went live, every stream "
                                     "header's and record's checksum, and that no live process is recording it. "
                                     "A folder that is not catalogued is verified on its own.")
    vf.add_argument("session", nargs="?", default=None, help="session id, prefix or folder (default: all)")
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(func=_verify)


def _cat(args: argparse.Namespace):
    from cortexlink.io.catalogue import Catalogue
    return Catalogue(args.db)


def _list(args: argparse.Namespace) -> int:
    with _cat(args) as cat:
        rows = cat.sessions(args.participant)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no sessions catalogued")
    for r in rows:
        secs = f"{r['seconds']:.1f} s" if r["seconds"] else "-"
        print(f"{r['session_id']}  {r['participant_id']}  {r['state']:9s}  {r['n_channels'] or '-'} ch  {secs}  "
              f"{(r['bytes'] or 0) / 1e6:.1f} MB  {r['path']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _cat(args) as cat:
        s = cat.show(args.session)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    for k, v in s.items():
        if k != "files":
            print(f"{k}: {v}")
    print(f"files ({len(s['files'])}):")
    for f in s["files"]:
        print(f"  {f['relpath']}  {f['bytes']} bytes  sha256 {f['sha256'][:16]}...")
    return 0


def _register(args: argparse.Namespace) -> int:
    with _cat(args) as cat:
        for f in args.folders:
            print(cat.registration(f, as_copy=args.copy)["message"])
    return 0


def _verify(args: argparse.Namespace) -> int:
    import sys
    with _cat(args) as cat:
        key = args.session
        folder = Path(key).resolve() if key is not None and Path(key).is_dir() else None
        if folder is not None and not any(r["path"] == str(folder) for r in cat.sessions()):
            from cortexlink.io.session_log import verify_session
            rep = verify_session(folder)
            res = [{"session_id": rep["session_id"] or str(folder), "path": str(folder), "ok": rep["ok"],
                    "problems": rep["problems"]}]
        else:
            res = cat.verify(key, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for r in res:
            print(f"{r['session_id']}: {'ok' if r['ok'] else 'FAILED'}")
            for pr in r["problems"]:
                print(f"  {pr}")
    return 0 if all(r["ok"] for r in res) else 1
