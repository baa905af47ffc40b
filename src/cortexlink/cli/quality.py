"""``cortexlink quality PATH --out DIR``: the data-set quality report (issue 16)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SEVERITY_CHOICES = ("info", "warning", "error", "critical")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quality", help="measure a data set's quality and write report.html / report.json",
        description="Measures the quality of an EEG or implant data set the way YY/T 1833.2-2022, "
                    "YY/T 1833.3/.4, ISO/IEC 25012 and ISO/IEC 5259-2 name it: completeness, consistency, "
                    "accuracy of labels, signal quality, diversity, independence of splits, "
                    "de-identification, traceability and fitness for AI (a baseline decoder against "
                    "permutation chance). Each check gives a score in [0, 1] and findings with evidence "
                    "(file, channel, time) and the clause they support. Files are streamed one at a "
                    "time: memory stays bounded on large data sets. Writes DIR/report.json, "
                    "DIR/report.html, DIR/figures/*.png (and DIR/report.pdf with --pdf). Exit status: 0, "
                    "1 when a finding is at or above --fail-on, 2 for bad arguments.",
        epilog="Example: cortexlink quality ../shared/data/eeg_motor_imagery --out qa "
               "--intended-use examples/quality/eegmmidb_intended_use.yaml --fail-on error")
    p.add_argument("path", type=Path, metavar="PATH",
                   help="a recording or a folder walked recursively: EDF/EDF+/BDF, BrainVision (.vhdr), FIF, "
                        "a BIDS folder, cortexlink session folders, NWB files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for the report (created if needed; report files in it are replaced)")
    p.add_argument("--split", type=Path, default=None, metavar="FILE",
                   help="train / validation / test membership: YAML or JSON {train: [...], validation: [...], "
                        "test: [...]} of recording names (relative to PATH), glob patterns or 'subject:<id>', or a "
                        "CSV with the header file,split or subject,split (see examples/quality/eegmmidb_split.yaml)")
    p.add_argument("--intended-use", type=Path, default=None, metavar="FILE",
                   help="YAML of the intended use: classes, rest_labels, tasks, window_s, required channels, "
                        "expected subjects / sites / devices (see examples/quality/eegmmidb_intended_use.yaml)")
    p.add_argument("--fail-on", choices=SEVERITY_CHOICES, default=None, metavar="SEVERITY",
                   help="exit 1 when any finding is at or above SEVERITY (info, warning, error, critical); "
                        "default: never (the exit status is 0 whatever is found)")
    p.add_argument("--pdf", action="store_true", help="also write DIR/report.pdf (scores, findings, figures)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the fitness checks (baseline decoder and its permutation chance level; the "
                        "slowest part)")
    p.add_argument("--permutations", type=int, default=100, metavar="N",
                   help="label permutations for the baseline's chance level (default: 100; at least 1)")
    p.add_argument("--line-hz", type=float, default=None, metavar="HZ",
                   help="mains frequency for the line-noise check (default: found per recording)")
    p.add_argument("--json", action="store_true",
                   help="print the scores and findings as JSON (as in report.json) instead of the summary")
    p.set_defaults(func=_run)


def _summary(report, out: Path, fail_on: str | None, failed: bool) -> None:
    from cortexlink.quality.model import SEVERITIES

    counts = {s: 0 for s in SEVERITIES}
    for f in report.findings:
        counts[f.severity] += 1
    print(f"cortexlink quality: {report.root} - {len(report.recordings)} recording(s), "
          f"{len(report.findings)} finding(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for c, s in report.scores.items():
        n = sum(1 for f in report.findings if f.characteristic == c)
        print(f"  {c:18s} {'n/a' if s is None else f'{s:.3f}':>6s}  {n:5d} finding(s)")
    worst = sorted((f for f in report.findings if f.severity in ("error", "critical")),
                   key=lambda f: -SEVERITIES.index(f.severity))[:5]
    for f in worst:
        where = ", ".join(x for x in (f.file, f.channel) if x)
        print(f"  [{f.severity}] {f.check}{f' ({where})' if where else ''}: {f.detail}")
    print(f"report: {out / 'report.html'}  {out / 'report.json'}"
          + (f"  {out / 'report.pdf'}" if (out / "report.pdf").exists() and report.options.get("pdf") else ""))
    if fail_on is not None:
        print(f"--fail-on {fail_on}: {'FAILED (exit 1)' if failed else 'passed'}")


def _run(args: argparse.Namespace) -> int:
    from cortexlink.core.errors import ConfigError
    from cortexlink.quality.runner import fails, run_quality

    if args.permutations < 1:
        raise ConfigError(f"--permutations must be >= 1; got {args.permutations} (use --no-baseline to skip "
                          "the baseline and its permutations)")
    report = run_quality(args.path, args.out, split=args.split, intended_use=args.intended_use,
                         baseline=not args.no_baseline, n_permutations=args.permutations,
                         progress=not args.json and sys.stderr.isatty(), pdf=args.pdf, fail_on=args.fail_on,
                         line_hz=args.line_hz)
    failed = fails(report, args.fail_on)
    if args.json:
        from cortexlink.core.jsonutil import jsonable

        d = report.to_dict()
        out = {"report": str(args.out / "report.json"), "scores": d["scores"], "findings": d["findings"],
               "fail_on": args.fail_on, "failed": failed}
        print(json.dumps(jsonable(out, finite=True), indent=2, allow_nan=False))
    else:
        _summary(report, args.out, args.fail_on, failed)
    sys.stdout.flush()
    return 1 if failed else 0
