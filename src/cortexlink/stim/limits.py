"""Per-participant, per-electrode stimulation safety limits: one validated, hashed file.

A limits file (YAML) says which electrodes exist, their area and material, which are enabled,
and the limits every pulse must respect. Example::

    version: 1
    participant: P01
    policy: refuse                  # refuse (default) | clamp
    electrodes:
      - {ids: [0, 63], area_um2: 2000, material: SIROF}   # inclusive id range
      - {id: 17, enabled: false}                         # a later entry overrides an earlier one
    limits:                         # defaults for every electrode
      max_amplitude_ua: 100
      max_charge_per_phase_nc: 20
      shannon_k_max: 1.75
      max_frequency_hz: 300
    electrode_limits:               # per-electrode overrides of any key of `limits`
      5: {max_amplitude_ua: 60}
    max_simultaneous_current_ua: 600

Every key is checked (unknown keys, wrong types, non-finite or out-of-range values are a
:class:`~cortexlink.core.errors.ConfigError` naming the key); :attr:`SafetyLimits.sha256` is the
SHA-256 of the canonical form of the validated limits, which a session writes into its manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.yamlfile import brief, read_yaml_file
from cortexlink.stim.model import MATERIALS, Electrode

__all__ = ["SafetyLimits", "LIMIT_DEFAULTS", "POLICIES", "MAX_ELECTRODE_ID"]

POLICIES = ("refuse", "clamp")
MAX_ELECTRODE_ID = 65535  # the command format's electrode field is 16 bits

#: Defaults for every electrode (human intracortical microstimulation practice: ≤ 100 µA,
#: ≤ 20 nC per phase, ≤ 300 Hz; Shannon k kept at 1.75 below the 1.85 damage line).
#: ``max_charge_density_uc_cm2: None`` takes the material's value from
#: :data:`~cortexlink.stim.model.MATERIALS`.
LIMIT_DEFAULTS: dict[str, Any] = {
    "max_amplitude_ua": 100.0,
    "min_width_us": 20.0,
    "max_width_us": 400.0,
    "max_gap_us": 500.0,
    "max_charge_per_phase_nc": 20.0,
    "shannon_k_max": 1.75,
    "max_charge_density_uc_cm2": None,
    "max_frequency_hz": 300.0,
    "max_imbalance_nc": 0.05,          # |phase-1 charge - phase-2 charge| per pulse
    "max_net_charge_nc": 5.0,          # |net charge| per electrode over net_charge_window_s
    "max_pulses_per_hour": 600_000,
}
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_simultaneous_current_ua": 1000.0,   # sum over electrodes of pulses active at one instant
    "net_charge_window_s": 1.0,
    "min_lead_s": 0.0,                       # a pulse must start at least this long after "now"
    "max_plan_s": 10.0,                      # longest window one plan may cover
    "max_pulses_per_plan": 200_000,
}
_TOP_KEYS = {"version", "participant", "policy", "electrodes", "limits", "electrode_limits",
             *_GLOBAL_DEFAULTS}
_ELECTRODE_KEYS = {"id", "ids", "area_um2", "material", "enabled"}


def _number(where: str, value: Any, *, lo: float = 0.0, strict: bool = True, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where} must be a number; got {brief(value)}")
    v = float(value)
    if not math.isfinite(v) or (v <= lo if strict else v < lo):
        raise ConfigError(f"{where} must be finite and {'>' if strict else '>='} {lo:g}; got {brief(value)}")
    if integer and v != int(v):
        raise ConfigError(f"{where} must be a whole number; got {brief(value)}")
    return v


def _check_limit(where: str, key: str, value: Any) -> Any:
    if key == "max_charge_density_uc_cm2" and value is None:
        return None
    if key == "shannon_k_max":
        v = _number(f"{where}.{key}", value, lo=-10.0)
        if v > 2.0:
            raise ConfigError(f"{where}.{key} must be <= 2.0 (k = 1.85 marks tissue damage); got {v:g}")
        return v
    if key == "max_pulses_per_hour":
        return int(_number(f"{where}.{key}", value, integer=True))
    if key == "min_width_us":
        return _number(f"{where}.{key}", value, strict=False)
    if key in ("max_imbalance_nc", "max_net_charge_nc"):
        return _number(f"{where}.{key}", value, strict=False)
    return _number(f"{where}.{key}", value)


class SafetyLimits:
    """Validated stimulation limits for one participant, as per-electrode arrays.

    Build with :meth:`from_file`, :meth:`from_dict` or :meth:`default`. Arrays are indexed by
    electrode id (length ``max id + 1``); ``known[i]`` is False for ids the file does not list.

    Raises
    ------
    ConfigError
        For any invalid entry (see the module docstring).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        if not isinstance(spec, dict):
            raise ConfigError(f"stimulation limits must be a mapping; got {type(spec).__name__}")
        unknown = sorted(str(k) for k in set(spec) - _TOP_KEYS)
        if unknown:
            raise ConfigError(f"stimulation limits: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
        if spec.get("version", 1) != 1:
            raise ConfigError(f"stimulation limits: version must be 1; got {brief(spec.get('version'))}")
        self.participant = str(spec.get("participant", ""))
        self.policy = spec.get("policy", "refuse")
        if self.policy not in POLICIES:
            raise ConfigError(f"stimulation limits: policy must be one of {list(POLICIES)}; got {brief(self.policy)}")
        self.electrodes = self._parse_electrodes(spec.get("electrodes"))
        base = dict(LIMIT_DEFAULTS)
        given = spec.get("limits") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"stimulation limits: limits must be a mapping; got {brief(given)}")
        for k, v in given.items():
            if k not in LIMIT_DEFAULTS:
                raise ConfigError(f"stimulation limits: unknown limit {k!r}; allowed: {sorted(LIMIT_DEFAULTS)}")
            base[k] = _check_limit("limits", k, v)
        overrides: dict[int, dict[str, Any]] = {}
        for eid, entry in (spec.get("electrode_limits") or {}).items():
            try:
                e = int(eid)
            except (TypeError, ValueError):
                raise ConfigError(f"stimulation limits: electrode_limits keys must be electrode ids; got {brief(eid)}") from None
            if e not in self.electrodes:
                raise ConfigError(f"stimulation limits: electrode_limits names electrode {e}, which electrodes does not list")
            if not isinstance(entry, dict):
                raise ConfigError(f"stimulation limits: electrode_limits[{e}] must be a mapping; got {brief(entry)}")
            for k, v in entry.items():
                if k not in LIMIT_DEFAULTS:
                    raise ConfigError(f"stimulation limits: unknown limit {k!r} for electrode {e}; allowed: {sorted(LIMIT_DEFAULTS)}")
                overrides.setdefault(e, {})[k] = _check_limit(f"electrode_limits[{e}]", k, v)
        self.defaults = base
        self.overrides = overrides
        g = dict(_GLOBAL_DEFAULTS)
        for k in _GLOBAL_DEFAULTS:
            if k in spec:
                g[k] = _number(k, spec[k], strict=(k != "min_lead_s"),
                               integer=(k == "max_pulses_per_plan"))
        self.max_simultaneous_current_ua = g["max_simultaneous_current_ua"]
        self.net_charge_window_s = g["net_charge_window_s"]
        self.min_lead_s = g["min_lead_s"]
        self.max_plan_s = g["max_plan_s"]
        self.max_pulses_per_plan = int(g["max_pulses_per_plan"])
        self._build_arrays()
        self.sha256 = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ parsing
    @staticmethod
    def _parse_electrodes(entries: Any) -> dict[int, Electrode]:
        if not isinstance(entries, list) or not entries:
            raise ConfigError("stimulation limits: electrodes must be a non-empty list of "
                              f"{{id: N}} or {{ids: [first, last]}} entries; got {brief(entries)}")
        out: dict[int, Electrode] = {}
        for i, entry in enumerate(entries):
            where = f"electrodes[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"stimulation limits: {where} must be a mapping; got {brief(entry)}")
            bad = sorted(set(entry) - _ELECTRODE_KEYS)
            if bad:
                raise ConfigError(f"stimulation limits: {where} has unknown key(s) {bad}; allowed: {sorted(_ELECTRODE_KEYS)}")
            if ("id" in entry) == ("ids" in entry):
                raise ConfigError(f"stimulation limits: {where} needs exactly one of id or ids")
            if "id" in entry:
                ids = [entry["id"]]
            else:
                rng = entry["ids"]
                if (not isinstance(rng, list) or len(rng) != 2
                        or not all(isinstance(x, int) and not isinstance(x, bool) for x in rng)
                        or rng[0] > rng[1]):
                    raise ConfigError(f"stimulation limits: {where}.ids must be [first, last] integers, "
                                      f"first <= last; got {brief(rng)}")
                ids = list(range(rng[0], rng[1] + 1))
            for eid in ids:
                if isinstance(eid, bool) or not isinstance(eid, int) or not 0 <= eid <= MAX_ELECTRODE_ID:
                    raise ConfigError(f"stimulation limits: {where} id must be an integer in [0, {MAX_ELECTRODE_ID}]; got {brief(eid)}")
                prev = out.get(eid)
                fields: dict[str, Any] = {"area_um2": prev.area_um2 if prev else None,
                                          "material": prev.material if prev else "SIROF",
                                          "enabled": prev.enabled if prev else True}
                fields.update({k: entry[k] for k in ("area_um2", "material", "enabled") if k in entry})
                if fields["area_um2"] is None:
                    raise ConfigError(f"stimulation limits: {where} must give area_um2 for electrode {eid}")
                try:
                    out[eid] = Electrode(eid, fields["area_um2"], fields["material"], fields["enabled"])
                except ConfigError as exc:
                    raise ConfigError(f"stimulation limits: {where}: {exc}") from None
        return out

    def _build_arrays(self) -> None:
        n = max(self.electrodes) + 1
        self.n_ids = n
        self.known = np.zeros(n, bool)
        self.enabled = np.zeros(n, bool)
        self.area_um2 = np.full(n, np.nan)
        for eid, el in self.electrodes.items():
            self.known[eid] = True
            self.enabled[eid] = el.enabled
            self.area_um2[eid] = el.area_um2
        self.per_electrode: dict[str, np.ndarray] = {}
        for key, default in self.defaults.items():
            arr = np.full(n, np.nan)
            for eid, el in self.electrodes.items():
                v = self.overrides.get(eid, {}).get(key, default)
                if key == "max_charge_density_uc_cm2" and v is None:
                    v = MATERIALS[el.material]
                arr[eid] = v
            self.per_electrode[key] = arr
        pe = self.per_electrode
        bad = self.known & (pe["min_width_us"] > pe["max_width_us"])
        if bad.any():
            raise ConfigError(f"stimulation limits: min_width_us > max_width_us for electrode(s) {np.flatnonzero(bad)[:10].tolist()}")
        # The charge one phase may carry on each electrode: the smallest of the charge limit, the
        # density limit times the area, and Shannon's k (k = log10(Q^2 / A), Q in µC, A in cm²).
        area_cm2 = self.area_um2 * 1e-8
        q_shannon_nc = np.sqrt(area_cm2 * 10.0 ** pe["shannon_k_max"]) * 1e3
        q_density_nc = pe["max_charge_density_uc_cm2"] * area_cm2 * 1e3
        self.max_phase_charge_nc = np.fmin(np.fmin(pe["max_charge_per_phase_nc"], q_density_nc), q_shannon_nc)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "SafetyLimits":
        """Validate a limits mapping (the YAML's content)."""
        return cls(spec)

    @classmethod
    def from_file(cls, path: str | Path) -> "SafetyLimits":
        """Read and validate a YAML limits file.

        Raises
        ------
        ConfigError
            If the file is missing, not YAML, or any entry is invalid (message names the file).
        """
        spec = read_yaml_file(path, what="stimulation limits file")
        try:
            return cls(spec)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def default(cls, n_electrodes: int = 64, *, area_um2: float = 2000.0, material: str = "SIROF",
                policy: str = "refuse", participant: str = "simulated", **limits: Any) -> "SafetyLimits":
        """Limits for electrodes ``0..n_electrodes-1`` with the default values (plus ``limits``)."""
        if isinstance(n_electrodes, bool) or not isinstance(n_electrodes, int) or not 1 <= n_electrodes <= MAX_ELECTRODE_ID + 1:
            raise ConfigError(f"n_electrodes must be an integer in [1, {MAX_ELECTRODE_ID + 1}]; got {n_electrodes!r}")
        glob = {k: limits.pop(k) for k in list(limits) if k in _GLOBAL_DEFAULTS}
        return cls({"version": 1, "participant": participant, "policy": policy,
                    "electrodes": [{"ids": [0, n_electrodes - 1], "area_um2": area_um2, "material": material}],
                    "limits": limits, **glob})

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        """Canonical plain form (what :attr:`sha256` hashes): electrodes listed one by one."""
        return {
            "version": 1, "participant": self.participant, "policy": self.policy,
            "electrodes": [{"id": e.id, "area_um2": e.area_um2, "material": e.material, "enabled": e.enabled}
                           for e in sorted(self.electrodes.values(), key=lambda el: el.id)],
            "limits": dict(self.defaults),
            "electrode_limits": {str(k): dict(v) for k, v in sorted(self.overrides.items())},
            "max_simultaneous_current_ua": self.max_simultaneous_current_ua,
            "net_charge_window_s": self.net_charge_window_s, "min_lead_s": self.min_lead_s,
            "max_plan_s": self.max_plan_s, "max_pulses_per_plan": self.max_pulses_per_plan,
        }

    def with_policy(self, policy: str) -> "SafetyLimits":
        """The same limits under another policy (``refuse`` or ``clamp``)."""
        d = self.to_dict()
        d["policy"] = policy
        d["electrode_limits"] = {int(k): v for k, v in d["electrode_limits"].items()}
        return SafetyLimits(d)

    def summary(self) -> dict[str, Any]:
        """A short description for manifests and the operator UI."""
        return {"participant": self.participant, "policy": self.policy, "sha256": self.sha256,
                "electrodes": int(self.known.sum()), "enabled": int(self.enabled.sum()),
                "max_simultaneous_current_ua": self.max_simultaneous_current_ua,
                "limits": {k: v for k, v in self.defaults.items()}}

    def __repr__(self) -> str:
        return (f"SafetyLimits(participant={self.participant!r}, policy={self.policy!r}, "
                f"electrodes={int(self.known.sum())}, sha256={self.sha256[:12]}…)")
