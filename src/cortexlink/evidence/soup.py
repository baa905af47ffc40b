"""SOUP (IEC 62304 "software of unknown provenance") and the SBOM, generated from the environment.

:func:`soup_list` walks the installed metadata from ``cortexlink``'s own requirements (the
runtime dependencies, and the extras asked for) down to every package they pull in, and lists
each once: name, version, licence (the package's ``License-Expression``, else a short ``License``
field, else its licence classifiers), purpose (the package's own summary, and which packages
need it) and its known vulnerabilities from ``pip-audit``'s JSON report when one is given.
Nothing here is kept by hand: a new dependency appears at the next run.

:func:`run_pip_audit` and :func:`write_sbom` run ``pip-audit`` and CycloneDX's ``cyclonedx-py``
on the interpreter's environment; either may be unavailable (no network to the vulnerability
service), which is reported as such, never as "no vulnerabilities".
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess  # nosec B404 - runs fixed argv lists of this environment's tools
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["soup_list", "run_pip_audit", "write_sbom", "licence_of"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def licence_of(meta: Any) -> str:
    """A package's licence as its metadata states it (an SPDX expression where there is one)."""
    expr = meta.get("License-Expression")
    if expr:
        return str(expr)
    lic = (meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 80:
        return lic
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and "OSI Approved" != c.split("::")[-1].strip()]
    if classifiers:
        return " OR ".join(dict.fromkeys(classifiers))
    return lic.splitlines()[0][:80] + " …" if lic else "unknown"


def _requires(dist: md.Distribution, extras: tuple[str, ...]) -> list[str]:
    out = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None:
            envs = [{"extra": e} for e in (extras or ("",))]
            if not any(req.marker.evaluate(env) for env in envs):
                continue
        out.append(_norm(req.name))
    return out


def soup_list(root: str = "cortexlink", extras: tuple[str, ...] = ("torch",),
              audit: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every third-party package ``root`` needs at run time (with ``extras``), once, sorted by name.

    Each entry: ``{name, version, licence, purpose, required_by, known_vulnerabilities}``;
    ``known_vulnerabilities`` is a list of ``{id, fix_versions, aliases}`` when ``audit`` (pip-audit's
    JSON) covered the package, else None (not audited).
    """
    dists = {_norm(d.metadata["Name"]): d for d in md.distributions() if d.metadata["Name"]}
    if _norm(root) not in dists:
        raise LookupError(f"{root} is not installed in this environment ({sys.executable})")
    vulns: dict[str, list[dict[str, Any]]] = {}
    audited: set[str] = set()
    for dep in (audit or {}).get("dependencies", []):
        n = _norm(str(dep.get("name", "")))
        if "skip_reason" in dep:
            continue
        audited.add(n)
        vulns[n] = [{"id": v.get("id"), "fix_versions": v.get("fix_versions", []), "aliases": v.get("aliases", [])}
                    for v in dep.get("vulns", [])]
    required_by: dict[str, set[str]] = {}
    todo = [(_norm(root), extras)]
    seen: set[str] = set()
    while todo:
        name, ex = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = dists.get(name)
        if dist is None:
            continue
        for dep in _requires(dist, ex):
            required_by.setdefault(dep, set()).add(name)
            todo.append((dep, ()))
    out = []
    for name in sorted(seen - {_norm(root)}):
        dist = dists.get(name)
        if dist is None:
            continue
        meta = dist.metadata
        summary = " ".join((meta.get("Summary") or "").split())
        by = sorted(required_by.get(name, ()))
        direct = _norm(root) in by
        purpose = summary + (" — direct dependency of cortexlink" if direct else f" — needed by {', '.join(by)}")
        out.append({"name": meta["Name"], "version": dist.version, "licence": licence_of(meta),
                    "purpose": purpose, "direct": direct, "required_by": by,
                    "known_vulnerabilities": vulns.get(name) if name in audited else None})
    return out


def run_pip_audit(out: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run ``pip-audit`` on this environment; ``{ok, report, message}``.

    ``ok`` is False (and ``message`` says why) when pip-audit is missing, fails or could not reach
    its vulnerability service for some packages: those packages stay "not audited".
    """
    cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--skip-editable", "--progress-spinner", "off",
           "-o", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)  # nosec B603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "report": None, "message": f"pip-audit did not run: {exc}"}
    if not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"ok": False, "report": None, "message": "pip-audit failed: " + " | ".join(tail)}
    report = json.loads(out.read_text())
    skipped = [d["name"] for d in report.get("dependencies", []) if "skip_reason" in d]
    n = len(report.get("dependencies", []))
    if skipped:
        return {"ok": False, "report": report,
                "message": f"pip-audit could not audit {len(skipped)} of {n} packages (its vulnerability "
                           f"service did not know them; offline or a mirror?): e.g. {', '.join(skipped[:5])}"}
    return {"ok": True, "report": report, "message": f"pip-audit audited {n} packages"}


def write_sbom(out: Path, pyproject: Path | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
    """A CycloneDX 1.6 JSON SBOM of this environment (``cyclonedx-py environment``); ``{ok, path, n_components, message}``."""
    cmd = [sys.executable, "-m", "cyclonedx_py", "environment", "--of", "JSON", "--sv", "1.6", "-o", str(out)]
    if pyproject is not None:
        cmd += ["--pyproject", str(pyproject)]  # the root component: cortexlink itself
    cmd.append(sys.executable)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)  # nosec B603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "path": None, "n_components": 0, "message": f"cyclonedx-py did not run: {exc}"}
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"ok": False, "path": None, "n_components": 0, "message": "cyclonedx-py failed: " + " | ".join(tail)}
    doc = json.loads(out.read_text())
    n = len(doc.get("components", []))
    return {"ok": True, "path": str(out), "n_components": n,
            "message": f"CycloneDX {doc.get('specVersion')} SBOM with {n} components"}
