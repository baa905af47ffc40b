"""The risk management file: hazards, the software requirements that control them, safety code.

``docs/safety/requirements.yaml`` is the source (see its header for the scales). :func:`load_risk_file`
reads it and checks that it holds together, refusing with a
:class:`~cortexlink.core.errors.ConfigError` that names the problem:

- every hazard has the ISO 14971 fields (hazard, sequence of events, harm, severity, probability
  before and after control) with severities ``S1``–``S5`` and probabilities ``P1``–``P5``, and at
  least one risk control;
- every risk control is a requirement id that exists, and every requirement controls a hazard;
- ids are unique and well formed (``HZ-NN``, ``SR-NN``);
- every safety-code entry names a file, the requirements it implements and the tests that exercise
  it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.core.yamlfile import read_yaml_file

__all__ = ["Hazard", "Requirement", "SafetyCode", "RiskFile", "load_risk_file", "DEFAULT_RISK_FILE"]

#: Where the risk file lives in a checkout.
DEFAULT_RISK_FILE = Path("docs/safety/requirements.yaml")

_HZ = re.compile(r"^HZ-\d{2}$")
_SR = re.compile(r"^SR-\d{2}$")
_SEVERITY = ("S1", "S2", "S3", "S4", "S5")
_PROBABILITY = ("P1", "P2", "P3", "P4", "P5")


@dataclasses.dataclass(frozen=True)
class Hazard:
    """One row of the hazard analysis."""

    id: str
    hazard: str
    sequence: str
    harm: str
    severity: str
    probability_before: str
    controls: tuple[str, ...]
    probability_after: str

    @property
    def acceptable_after(self) -> bool:
        """Whether the residual risk is in the acceptable zone of the file's risk matrix."""
        return risk_acceptable(self.severity, self.probability_after)


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A software requirement (a risk control) with its id."""

    id: str
    title: str
    safety: bool
    hazards: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SafetyCode:
    """A safety-critical source file, what it implements, and the tests that exercise it."""

    path: str
    item: str
    requirements: tuple[str, ...]
    tests: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RiskFile:
    """The parsed risk management file."""

    hazards: tuple[Hazard, ...]
    requirements: tuple[Requirement, ...]
    safety_code: tuple[SafetyCode, ...]

    def requirement(self, rid: str) -> Requirement:
        for r in self.requirements:
            if r.id == rid:
                return r
        raise KeyError(rid)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.requirements)


def risk_acceptable(severity: str, probability: str) -> bool:
    """The file's risk matrix: S1–S2 at P3 or below, S3 at P2 or below, S4–S5 at P1 only."""
    s = _SEVERITY.index(severity) + 1
    p = _PROBABILITY.index(probability) + 1
    if s <= 2:
        return p <= 3
    if s == 3:
        return p <= 2
    return p == 1


def _text(where: str, d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty text; got {v!r}")
    return " ".join(v.split())


def _ids(where: str, d: dict[str, Any], key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    v = d.get(key)
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list; got {v!r}")
    out = []
    for x in v:
        if not isinstance(x, str) or not pattern.match(x):
            raise ConfigError(f"{where}: '{key}' holds {x!r}, not an id like {pattern.pattern[1:-1]}")
        out.append(x)
    return tuple(out)


def _choice(where: str, d: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    v = d.get(key)
    if v not in choices:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(choices)}; got {v!r}")
    return str(v)


def _entries(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = doc.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(x, dict) for x in v):
        raise ConfigError(f"the risk file needs a non-empty list of mappings under '{key}'")
    return v


def parse_risk_file(doc: Any) -> RiskFile:
    """Build and check a :class:`RiskFile` from the parsed YAML document."""
    if not isinstance(doc, dict):
        raise ConfigError("the risk file must be a mapping with 'hazards', 'requirements' and 'safety_code'")
    hazards: list[Hazard] = []
    for i, d in enumerate(_entries(doc, "hazards")):
        hid = d.get("id")
        if not isinstance(hid, str) or not _HZ.match(hid):
            raise ConfigError(f"hazards[{i}]: id must look like HZ-01; got {hid!r}")
        w = f"hazard {hid}"
        hazards.append(Hazard(hid, _text(w, d, "hazard"), _text(w, d, "sequence"), _text(w, d, "harm"),
                              _choice(w, d, "severity", _SEVERITY), _choice(w, d, "probability_before", _PROBABILITY),
                              _ids(w, d, "controls", _SR), _choice(w, d, "probability_after", _PROBABILITY)))
    _unique("hazard", [h.id for h in hazards])
    controlled: dict[str, list[str]] = {}
    for h in hazards:
        for rid in h.controls:
            controlled.setdefault(rid, []).append(h.id)
    reqs: list[Requirement] = []
    for i, d in enumerate(_entries(doc, "requirements")):
        rid = d.get("id")
        if not isinstance(rid, str) or not _SR.match(rid):
            raise ConfigError(f"requirements[{i}]: id must look like SR-01; got {rid!r}")
        safety = d.get("safety")
        if not isinstance(safety, bool):
            raise ConfigError(f"requirement {rid}: 'safety' must be true or false; got {safety!r}")
        if rid not in controlled:
            raise ConfigError(f"requirement {rid} controls no hazard: name it in a hazard's 'controls'")
        reqs.append(Requirement(rid, _text(f"requirement {rid}", d, "title"), safety, tuple(controlled[rid])))
    _unique("requirement", [r.id for r in reqs])
    known = {r.id for r in reqs}
    for h in hazards:
        missing = [c for c in h.controls if c not in known]
        if missing:
            raise ConfigError(f"hazard {h.id}: risk controls {', '.join(missing)} are not requirements in the file")
    code: list[SafetyCode] = []
    for i, d in enumerate(_entries(doc, "safety_code")):
        path = d.get("path")
        if not isinstance(path, str) or not path.endswith(".py"):
            raise ConfigError(f"safety_code[{i}]: 'path' must be a .py file; got {path!r}")
        w = f"safety code {path}"
        sreqs = _ids(w, d, "requirements", _SR)
        unknown = [r for r in sreqs if r not in known]
        if unknown:
            raise ConfigError(f"{w}: {', '.join(unknown)} are not requirements in the file")
        tests = d.get("tests")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t for t in tests):
            raise ConfigError(f"{w}: 'tests' must be a non-empty list of test paths")
        code.append(SafetyCode(path, _text(w, d, "item"), sreqs, tuple(tests)))
    _unique("safety code path", [c.path for c in code])
    return RiskFile(tuple(hazards), tuple(reqs), tuple(code))


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for x in ids:
        if x in seen:
            raise ConfigError(f"{what} {x} appears twice in the risk file")
        seen.add(x)


def load_risk_file(path: str | Path = DEFAULT_RISK_FILE) -> RiskFile:
    """Read and check the risk management file (see the module docstring)."""
    return parse_risk_file(read_yaml_file(Path(path)))
