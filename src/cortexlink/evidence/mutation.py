"""Mutation testing of the safety-critical files with mutmut, one file at a time.

For each safety-code entry of the risk file, :func:`mutate_file` copies ``src/``, ``tests/`` and
``pyproject.toml`` into a work folder (the checkout is never touched), configures mutmut there to
mutate only that file and to run only the entry's tests, runs it, and counts the outcomes.

The score is ``killed / (killed + survived + no_tests)``: a mutant no test runs counts as a
survivor (untested code is not verified code); a mutant that timed out or crashed the test
process counts as killed (the tests noticed). Mutants mutmut did not get to (``not checked``) are
reported and left out of the score.

mutmut imports the package from its mutated copy; the editable install's ``src`` path is taken off
``sys.path`` in the mutmut process so that the copy wins.
"""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 - runs this environment's mutmut with a fixed argv
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["mutate_file", "parse_results", "score"]

_KILLED = ("killed", "timeout", "segfault")
_SURVIVED = ("survived", "suspicious")

_RUNNER = """\
import os, sys
src = os.path.realpath(sys.argv[1])
sys.path = [p for p in sys.path if os.path.realpath(p or '.') != src]
from mutmut.__main__ import cli
cli(sys.argv[2:])
"""


def parse_results(text: str) -> dict[str, list[str]]:
    """``{status: [mutant names]}`` from ``mutmut results --all true``."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(\S+): (.+?)\s*$", line)
        if m:
            out.setdefault(m.group(2), []).append(m.group(1))
    return out


def score(counts: dict[str, int]) -> float | None:
    """The mutation score in percent (see the module docstring); None when nothing was checked."""
    killed = sum(counts.get(k, 0) for k in _KILLED)
    total = killed + sum(counts.get(k, 0) for k in _SURVIVED) + counts.get("no tests", 0)
    return None if total == 0 else round(100.0 * killed / total, 1)


def _mutmut_config(path: str, tests: tuple[str, ...], debug: bool) -> str:
    def arr(xs: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join('"' + x.replace('"', '\\"') + '"' for x in xs) + "]"
    return ("\n[tool.mutmut]\n"
            'source_paths = ["src"]\n'
            f"only_mutate = {arr([path])}\n"
            f"pytest_add_cli_args_test_selection = {arr(tests)}\n"
            f"pytest_add_cli_args = {arr(['-p', 'no:cacheprovider', '-p', 'no:xdist'])}\n"
            f"debug = {'true' if debug else 'false'}\n")


def mutate_file(repo: Path, path: str, tests: tuple[str, ...], work: Path, *, max_children: int = 2,
                timeout_s: float = 3600.0, debug: bool = False, log: Any = None) -> dict[str, Any]:
    """Run mutmut on one file; ``{module, path, killed, survived, no_tests, not_checked, total, score, seconds, message}``.

    ``killed`` includes timeouts and crashes, ``survived`` includes suspicious results (not the
    mutants no test ran: ``no_tests``); ``survivors`` names both kinds; ``message``
    says what went wrong when mutmut did not finish (its log is kept in ``work``).
    """
    repo = repo.resolve()
    for t in tests:
        if not (repo / t.split("::")[0]).exists():
            raise FileNotFoundError(f"mutation tests for {path}: {t} does not exist")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(repo / "src", work / "src", ignore=ignore)
    shutil.copytree(repo / "tests", work / "tests", ignore=ignore)
    text = (repo / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)
    (work / "pyproject.toml").write_text(text + _mutmut_config(path, tests, debug))
    (work / "_run_mutmut.py").write_text(_RUNNER)
    module = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    t0 = time.monotonic()
    runner = [sys.executable, "_run_mutmut.py", str(repo / "src")]
    message = ""
    with open(work / "mutmut-run.log", "w") as fh:
        try:
            proc = subprocess.run(runner + ["run", "--max-children", str(max_children)], cwd=work,  # nosec B603
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
            if proc.returncode != 0:
                message = f"mutmut run exited {proc.returncode} (see {work / 'mutmut-run.log'})"
        except subprocess.TimeoutExpired:
            message = f"mutmut ran past {timeout_s:.0f} s and was stopped; unchecked mutants are left out"
    res = subprocess.run(runner + ["results", "--all", "true"], cwd=work, capture_output=True,  # nosec B603
                         text=True, timeout=600, check=False)
    by_status = parse_results(res.stdout)
    counts = {k: len(v) for k, v in by_status.items()}
    survivors = sorted(by_status.get("survived", []) + by_status.get("no tests", []))
    out = {"module": module, "path": path, "tests": list(tests),
           "killed": sum(counts.get(k, 0) for k in _KILLED),
           "survived": sum(counts.get(k, 0) for k in _SURVIVED),
           "no_tests": counts.get("no tests", 0), "not_checked": counts.get("not checked", 0),
           "total": sum(counts.values()), "score": score(counts), "seconds": round(time.monotonic() - t0, 1),
           "survivors": survivors, "message": message}
    if log is not None:
        log(f"mutation {module}: {out['killed']} killed, {out['survived']} survived "
            f"(score {out['score']} %) in {out['seconds']:.0f} s")
    return out
