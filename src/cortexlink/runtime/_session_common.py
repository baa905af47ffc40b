"""What the cursor sessions (:mod:`.session`) and the speech sessions (:mod:`.speech_session`)
share: the implant section's check, the result type and the early-stop error."""

from __future__ import annotations

from cortexlink.core.errors import ConfigError, CortexlinkError

__all__ = ["SessionResult", "SessionStopped", "check_implant", "check_finished"]


def _where(path: str, msg: str) -> ConfigError:
    return ConfigError(f"session.{path} {msg}")


class SessionStopped(CortexlinkError):
    """A session that ended before its schedule did (a failure, a node that failed, a stop signal);
    ``run`` is the runtime's result of what did run (JSON-able, for a summary)."""

    def __init__(self, message: str, run: dict) -> None:
        super().__init__(message)
        self.run = run


class SessionResult(dict):
    """``config``, ``summary`` (JSON-able figures), ``traces`` (BlockTrace per task block), ``tasks``
    (by block name), ``decoder`` and ``click_decoder`` (as fitted last; None when the decoder ran in
    another process), ``run`` (the runtime's result: nodes, edges, faults)."""


def check_implant(imp: dict, presets: dict) -> dict:
    """``session.implant`` checked: a preset and ImplantConfig overrides. A channel count too small
    for the preset's dead and saturating channels (more than half of them bad) scales those two
    counts with it, unless the session sets them (``record --channels 4`` runs)."""
    from cortexlink.core.yamlfile import brief
    from cortexlink.sim import ImplantConfig

    imp = dict(imp)
    preset = imp.pop("preset", "default")
    if not isinstance(preset, str) or preset not in presets:
        raise _where("implant.preset", f"must be one of {sorted(presets)}; got {brief(preset)}")
    fields = set(ImplantConfig.__dataclass_fields__)
    unknown = sorted(str(k) for k in imp if k not in fields)
    if unknown:
        raise _where("implant", f"has unknown field(s) {unknown[:10]}; ImplantConfig fields: {sorted(fields)}")
    base = presets[preset]
    n = imp.get("n_channels")
    if (isinstance(n, int) and not isinstance(n, bool) and n > 0 and "n_dead" not in imp
            and "n_saturating" not in imp and 2 * (base.n_dead + base.n_saturating) > n):
        imp["n_dead"] = base.n_dead * n // base.n_channels
        imp["n_saturating"] = base.n_saturating * n // base.n_channels
    try:
        base.replace(**imp)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _where("implant", f"is invalid: {exc}") from exc
    return {"preset": preset, **imp}


def check_finished(name: str, rr: dict, finished: str) -> None:
    """Raise :class:`SessionStopped` unless the run ``rr`` ended with its schedule (stop reason
    ``finished``): a failure, a node that failed (its figures would be wrong), a stop signal."""
    fail = rr.get("failure")
    if fail:
        raise SessionStopped(f"session {name!r} ended on a failure ({fail['kind']}, node {fail['node']}): "
                             f"{fail['message']}", rr)
    failed = [n for n, i in rr["nodes"].items() if i.get("state") == "failed" or i.get("n_failures")]
    if failed:
        first = [f.get("message") for f in rr["faults"] if f.get("kind") == "node_failed"][:3]
        raise SessionStopped(f"session {name!r}: node(s) {failed} failed, so its figures would be wrong; "
                             f"first failures: {first}", rr)
    if str(rr["stop_reason"]).endswith(" received"):          # SIGINT/SIGTERM/SIGHUP (runtime.signals)
        raise SessionStopped(f"session {name!r} was stopped ({rr['stop_reason']}) after {rr['seconds']:.1f} s, "
                             f"before its schedule finished", rr)
    if rr["stop_reason"] != finished:
        raise SessionStopped(f"session {name!r} stopped before its schedule finished ({rr['stop_reason']}); "
                             f"faults: {rr.get('fault_counts')}", rr)
