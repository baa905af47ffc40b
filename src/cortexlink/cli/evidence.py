"""``cortexlink evidence``: the safety evidence file (risk file -> requirements -> tests, coverage,
mutation scores, static analysis, SOUP and SBOM), written to evidence/report.html and
evidence/evidence.json. ``make evidence`` runs it."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evidence", help="generate the safety evidence (traceability, coverage, mutation, SOUP, SBOM)",
        description="Run the test suite with branch coverage, trace every requirement of "
                    "docs/safety/requirements.yaml to the tests marked @pytest.mark.req(ID), mutation-test the "
                    "safety-critical files, run ruff/mypy/bandit, list SOUP with pip-audit's known "
                    "vulnerabilities and write a CycloneDX SBOM; writes OUT/evidence.json and OUT/report.html. "
                    "Exits 1 when a safety requirement has no passing test or a goal (safety coverage >= 90 %, "
                    "mutation score >= 80 %, static analysis clean, no failed test) is missed. Run it in a "
                    "checkout (it needs tests/ and docs/safety/).")
    p.add_argument("--repo", default=".", help="the checkout (default: the current folder)")
    p.add_argument("--out", default="evidence", help="output folder (default: evidence)")
    p.add_argument("--reuse-tests", action="store_true",
                   help="read OUT/junit.xml and OUT/coverage.json of an earlier run instead of running the suite")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers for the test run (default 2)")
    p.add_argument("--no-mutation", action="store_true", help="skip mutation testing (its figures: not measured)")
    p.add_argument("--no-static", action="store_true", help="skip ruff, mypy and bandit")
    p.add_argument("--no-audit", action="store_true", help="skip pip-audit (vulnerabilities: not audited)")
    p.add_argument("--mutation-children", type=int, default=2, help="parallel mutmut workers (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cortexlink.core.errors import ConfigError
    from cortexlink.evidence.run import build_evidence

    repo = Path(args.repo)
    if not (repo / "docs" / "safety" / "requirements.yaml").is_file() or not (repo / "tests").is_dir():
        raise ConfigError(f"{repo.resolve()} is not a cortexlink checkout (no docs/safety/requirements.yaml or tests/)")
    if args.workers < 1 or args.mutation_children < 1:
        raise ConfigError("--workers and --mutation-children must be at least 1")

    def log(msg: str) -> None:
        print(f"evidence: {msg}", flush=True)

    ev = build_evidence(repo, args.out, reuse_tests=args.reuse_tests, workers=args.workers,
                        static=not args.no_static, mutation=not args.no_mutation, audit=not args.no_audit,
                        mutation_children=args.mutation_children, log=log)
    v = ev["verdict"]
    for p in v["problems"]:
        print(f"evidence: PROBLEM: {p}", file=sys.stderr)
    for m in v["not_measured"]:
        print(f"evidence: not measured: {m}")
    print("evidence: " + ("all safety requirements verified, goals met" if v["ok"] else "INCOMPLETE (see above)"))
    return 0 if v["ok"] else 1
