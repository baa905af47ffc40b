"""The messages of a closed loop: typed, immutable, and the same in one process and over Redis.

:class:`~cortexlink.core.types.Intent` is the decoder's output; the others are

=====================  ====================  =====================================================
type                   port kind             from -> to
=====================  ====================  =====================================================
:class:`FeatureBin`    ``features``          dsp -> decoder, recorder, trace, UI feed, LSL outlet
:class:`ParticipantIntent` ``participant_intent`` participant -> cursor, decoder (labels), implant
:class:`CursorState`   ``cursor_state``      cursor -> participant, recorder, UI feed
:class:`Control`       ``control``           cursor -> decoder (block begin/end, fit, refit)
:class:`Gate`          ``gate``              cursor (watchdog) -> UI feed, recorders
:class:`BinRow`        ``bin_row``           cursor -> trace, recorder (one row of a BlockTrace)
=====================  ====================  =====================================================

Each has ``to_dict()`` (plain values and numpy arrays, for the wire) and ``from_dict()`` (its
inverse, which refuses unknown or missing keys with a :class:`ValidationError`);
:mod:`cortexlink.runtime.wire` sends them over Redis by type name. Task events, faults and operator
commands stay plain records (``events``, ``fault``, ``operator_command``): their keys differ
from one event kind to the next and they are written to the session log as they are.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import LoopMode, Target

__all__ = ["FeatureBin", "ParticipantIntent", "CursorState", "ControlCommand", "Control", "Gate", "BinRow",
           "target_to_dict", "target_from_dict"]

_NAN2 = (math.nan, math.nan)


def _pair(v: Any) -> tuple[float, float]:
    return (float(v[0]), float(v[1]))


def _keys(cls: type, d: Any, required: tuple[str, ...]) -> dict[str, Any]:
    """``d`` as a dict after checking it has only ``cls``'s fields and at least ``required``."""
    fields = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(d, dict):
        raise ValidationError(f"a {cls.__name__} is built from a dict; got {type(d).__name__}")
    unknown = sorted(set(d) - set(fields))
    missing = [k for k in required if k not in d]
    if unknown or missing:
        raise ValidationError(f"a {cls.__name__} has the keys {fields} ({', '.join(required)} required); "
                              f"got unknown {unknown}, missing {missing}")
    return d


def _mode(v: Any) -> LoopMode | None:
    if v is None:
        return None
    try:
        return LoopMode(v)
    except ValueError:
        raise ValidationError(f"mode must be one of {[m.value for m in LoopMode]} or None; got {v!r}") from None


def target_to_dict(t: Target | None) -> dict[str, Any] | None:
    """A task target as plain values (None stays None)."""
    if t is None:
        return None
    return {"xy": [float(t.xy[0]), float(t.xy[1])], "radius": float(t.radius), "click": bool(t.click),
            "dwell_s": float(getattr(t, "dwell_s", 0.0))}


def target_from_dict(d: dict[str, Any] | None) -> Target | None:
    """Inverse of :func:`target_to_dict`."""
    if d is None:
        return None
    if not isinstance(d, dict) or "xy" not in d or "radius" not in d:
        raise ValidationError(f"a target needs xy and radius; got {d!r}")
    return Target(_pair(d["xy"]), float(d["radius"]), bool(d.get("click", True)), float(d.get("dwell_s", 0.0)))


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureBin:
    """One bin of the feature extractor's output.

    Attributes
    ----------
    bin : int
        Bin index since the stream began.
    bin_start : int
        Sample index at which the bin starts.
    x : ndarray (n_features,) or None
        The decoder's features (None until the extractor is calibrated).
    valid : bool
        Some feature of the bin is valid (False inside the calibration window or a gap).
    raster : ndarray (<= 128,) uint8 or None
        Threshold crossings of the first channels (for the trace's raster).
    row : ndarray or None
        Every feature of the bin (for the recorder and the operator's activity view).
    """

    bin: int
    bin_start: int
    x: np.ndarray | None
    valid: bool
    raster: np.ndarray | None = None
    row: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"bin": self.bin, "bin_start": self.bin_start, "x": self.x, "valid": self.valid,
                "raster": self.raster, "row": self.row}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureBin":
        d = _keys(cls, d, ("bin", "bin_start", "x", "valid"))
        arr = {k: (None if d.get(k) is None else np.asarray(d[k])) for k in ("x", "raster", "row")}
        return cls(int(d["bin"]), int(d["bin_start"]), valid=bool(d["valid"]), **arr)


@dataclasses.dataclass(frozen=True)
class ParticipantIntent:
    """What the simulated participant intends in one bin.

    Attributes
    ----------
    bin : int
    velocity : (vx, vy)
        Intended cursor velocity (screen units/s): the decoders' training label.
    click : float
        Click intent in [0, 1].
    neural : (vx, vy, click)
        The intent as the implant's neurons encode it (the participant's internal model).
    active : bool
        False between blocks (the participant rests; everything zero).
    """

    bin: int
    velocity: tuple[float, float] = (0.0, 0.0)
    click: float = 0.0
    neural: tuple[float, float, float] = (0.0, 0.0, 0.0)
    active: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"bin": int(self.bin), "velocity": list(_pair(self.velocity)), "click": float(self.click),
                "neural": [float(v) for v in self.neural], "active": bool(self.active)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParticipantIntent":
        d = _keys(cls, d, ("bin",))
        n = d.get("neural", (0.0, 0.0, 0.0))
        return cls(int(d["bin"]), _pair(d.get("velocity", (0.0, 0.0))), float(d.get("click", 0.0)),
                   (float(n[0]), float(n[1]), float(n[2])), bool(d.get("active", False)))


@dataclasses.dataclass(frozen=True)
class CursorState:
    """The cursor after a bin, and what the participant sees next.

    Attributes
    ----------
    bin : int
        The next bin (the one this state is the start of).
    t_s : float
        Session time.
    xy, velocity : (x, y)
        Cursor position and the velocity it was given.
    clicked : bool
        A click fired in the bin.
    halted : bool
        The watchdog or the E-STOP holds the cursor.
    block : str or None
        The running block (None: warm-up, between blocks, or waiting for a fit).
    mode : LoopMode or None
        The block's loop mode.
    begin : bool
        The block begins with the next bin (the participant resets).
    target : Target or None
        The task's current target.
    done : bool
        The schedule is finished.
    op : dict or None
        The operator's view of an interactive cursor (state, job, E-STOP, mouse, decoded output,
        task display; see :mod:`cortexlink.runtime.nodes._operator`); None with a schedule.
    """

    bin: int
    t_s: float
    xy: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    clicked: bool = False
    halted: bool = False
    block: str | None = None
    mode: LoopMode | None = None
    begin: bool = False
    target: Target | None = None
    done: bool = False
    op: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"bin": int(self.bin), "t_s": float(self.t_s), "xy": list(_pair(self.xy)),
                "velocity": list(_pair(self.velocity)), "clicked": bool(self.clicked), "halted": bool(self.halted),
                "block": self.block, "mode": None if self.mode is None else LoopMode(self.mode).value,
                "begin": bool(self.begin), "target": target_to_dict(self.target), "done": bool(self.done),
                "op": self.op}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CursorState":
        d = _keys(cls, d, ("bin", "t_s", "xy"))
        return cls(int(d["bin"]), float(d["t_s"]), _pair(d["xy"]), _pair(d.get("velocity", (0.0, 0.0))),
                   bool(d.get("clicked", False)), bool(d.get("halted", False)), d.get("block"), _mode(d.get("mode")),
                   bool(d.get("begin", False)), target_from_dict(d.get("target")), bool(d.get("done", False)),
                   d.get("op"))


class ControlCommand(str, enum.Enum):
    """What the cursor tells the decoder: a block begins or ends, fit, refit."""

    BEGIN = "begin"
    END = "end"
    FIT = "fit"
    REFIT = "refit"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Control:
    """A command from the cursor (its schedule or the operator) to the decoder.

    Attributes
    ----------
    cmd : ControlCommand
    name : str
        The block's (begin, end) or the fit's name.
    kind : str or None
        ``begin``: the block's kind (calibration, closed_loop, evaluation).
    mode : LoopMode or None
        ``begin``: the block's loop mode.
    bin : int or None
        ``begin``: the block's first bin.
    blocks : tuple of dict
        ``refit``: the closed-loop blocks since the last fit (name, bins, cursor_xy, target_xy,
        on_target, dt_s), the decoder's refit set. ``fit``: every calibration block's kinematics
        (name, bins, cursor_xy, cursor_velocity, target_xy, dt_s), the labels a lab has.
    job : bool
        An operator's fit or refit: its failure is reported, not fatal.
    """

    cmd: ControlCommand
    name: str
    kind: str | None = None
    mode: LoopMode | None = None
    bin: int | None = None
    blocks: tuple[dict[str, Any], ...] = ()
    job: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "cmd", ControlCommand(self.cmd))
        except ValueError:
            raise ValidationError(f"cmd must be one of {[c.value for c in ControlCommand]}; got {self.cmd!r}") from None
        object.__setattr__(self, "mode", _mode(self.mode))
        if self.cmd is ControlCommand.BEGIN and (self.kind is None or self.mode is None):
            raise ValidationError(f"a begin control needs the block's kind and mode; got {self!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd.value, "name": self.name, "kind": self.kind,
                "mode": None if self.mode is None else self.mode.value, "bin": self.bin,
                "blocks": list(self.blocks), "job": bool(self.job)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Control":
        d = _keys(cls, d, ("cmd", "name"))
        return cls(d["cmd"], str(d["name"]), d.get("kind"), d.get("mode"),
                   None if d.get("bin") is None else int(d["bin"]), tuple(d.get("blocks") or ()),
                   bool(d.get("job", False)))


@dataclasses.dataclass(frozen=True)
class Gate:
    """The watchdog's gate, published when it changes, and halted once more when the run stops
    (its ``faults`` then end with a ``run_stopped`` entry).

    Attributes
    ----------
    halted : bool
        The cursor is held: velocity zero, no clicks.
    velocity : (0, 0) or None
        The velocity forced on the cursor while halted.
    click_suppressed : bool
    faults : tuple of dict
        The active faults (kind, severity, node, message, sample).
    """

    halted: bool
    velocity: tuple[float, float] | None = None
    click_suppressed: bool = False
    faults: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"halted": bool(self.halted), "velocity": None if self.velocity is None else list(_pair(self.velocity)),
                "click_suppressed": bool(self.click_suppressed), "faults": [dict(f) for f in self.faults]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Gate":
        d = _keys(cls, d, ("halted",))
        v = d.get("velocity")
        return cls(bool(d["halted"]), None if v is None else _pair(v), bool(d.get("click_suppressed", False)),
                   tuple(dict(f) for f in d.get("faults") or ()))


@dataclasses.dataclass(frozen=True)
class BinRow:
    """One bin of a task block: one row of a :class:`~cortexlink.tasks.trace.BlockTrace` (whose
    attributes these fields fill), plus where it belongs (``block``, ``n``, ``bin``, ``sample``)
    and whether the gate held the cursor (``halted``). NaN where a value does not apply."""

    block: str
    n: int
    bin: int
    sample: int
    t_s: float
    cursor_xy: tuple[float, float]
    cursor_velocity: tuple[float, float]
    intended_velocity: tuple[float, float] = _NAN2
    click_intent: float = math.nan
    decoded_velocity: tuple[float, float] = _NAN2
    click_proba: float = math.nan
    clicks: bool = False
    target_xy: tuple[float, float] = _NAN2
    target_radius: float = math.nan
    on_target: bool = False
    decode_latency_us: float = math.nan
    loop_latency_us: float = math.nan
    halted: bool = False

    #: The fields that are columns of a BlockTrace.
    TRACE_FIELDS = ("t_s", "cursor_xy", "cursor_velocity", "intended_velocity", "click_intent", "decoded_velocity",
                    "click_proba", "clicks", "target_xy", "target_radius", "on_target", "decode_latency_us",
                    "loop_latency_us")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("cursor_xy", "cursor_velocity", "intended_velocity", "decoded_velocity", "target_xy"):
            d[k] = list(_pair(d[k]))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BinRow":
        d = _keys(cls, d, ("block", "n", "bin", "sample", "t_s", "cursor_xy", "cursor_velocity"))
        pairs: dict[str, Any] = {k: _pair(d[k]) for k in ("cursor_xy", "cursor_velocity", "intended_velocity",
                                                          "decoded_velocity", "target_xy") if k in d}
        return cls(**{**d, **pairs})
