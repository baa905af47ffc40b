"""The block schedule of a closed-loop session: which blocks run, in which mode, for how long.

A schedule is a list of blocks run in order (see :mod:`cortexlink.runtime.session` for the file
format): ``calibration`` (open loop: the cursor moves to the targets by itself while the
participant intends along; its bins train the decoders), ``fit`` (fit the velocity and click
decoders on every calibration block so far), ``closed_loop`` (the decoder drives the cursor;
its bins are kept for ReFIT), ``refit`` (ReFIT-Kalman: re-estimate from the closed-loop blocks
since the last fit) and ``evaluation`` (closed loop, measured). With the ``perfect`` decoder the
cursor follows the participant's intent exactly.

These plain functions are the schedule's only definition; the runtime's cursor node runs it.
"""

from __future__ import annotations

from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import LoopMode
from cortexlink.core.yamlfile import brief

__all__ = ["TASKS", "BLOCK_KINDS", "TASK_BLOCKS", "make_task", "check_blocks", "block_mode", "block_bins"]

TASKS = ("centre_out", "webgrid", "chess")
BLOCK_KINDS = ("calibration", "fit", "closed_loop", "refit", "evaluation")
#: Block kinds that run a task (the others fit decoders between blocks).
TASK_BLOCKS = ("calibration", "closed_loop", "evaluation")
_BLOCK_KEYS = {"name", "kind", "task", "seconds", "max_seconds", "task_params"}
#: Longest block (``seconds`` and ``max_seconds``): a day.
MAX_BLOCK_SECONDS = 86400.0


def make_task(kind: str, params: dict, *, seed: int = 0) -> Any:
    """A task from its schedule name and parameters."""
    if kind == "centre_out":
        from cortexlink.tasks.centre_out import CentreOutTask

        return CentreOutTask(**{"seed": seed, **params})
    if kind == "webgrid":
        from cortexlink.tasks.webgrid import WebgridTask

        return WebgridTask(**{"seed": seed, **params})
    if kind == "chess":
        from cortexlink.tasks.chess_task import ChessTask

        return ChessTask(**{"seed": seed, **params})
    raise ConfigError(f"task must be one of {list(TASKS)}; got {kind!r}")


def block_mode(kind: str, decoder_kind: str) -> LoopMode:
    """The loop mode of a task block: ``perfect`` with the perfect decoder, else ``open`` for
    calibration and ``closed`` for the rest."""
    if decoder_kind == "perfect":
        return LoopMode.PERFECT
    return LoopMode.OPEN if kind == "calibration" else LoopMode.CLOSED


def block_bins(block: dict, dt_s: float) -> int:
    """Most bins a task block runs (``seconds``, or ``max_seconds`` for a block without)."""
    secs = block.get("seconds")
    return int(round((secs if secs is not None else block["max_seconds"]) / dt_s))


def _err(prefix: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"{prefix}.{path} {msg}")


def _number(prefix: str, path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
            float("inf"), float("-inf")):
        raise _err(prefix, path, f"must be a number of seconds; got {brief(value)}")
    if value <= 0:
        raise _err(prefix, path, f"must be > 0; got {brief(value)}")
    if value > MAX_BLOCK_SECONDS:
        raise _err(prefix, path, f"must be at most {MAX_BLOCK_SECONDS:g} s (24 h); got {value:g}")
    return float(value)


def _block_name(prefix: str, path: str, name: Any) -> str:
    if (isinstance(name, bool) or not isinstance(name, (str, int)) or not 1 <= len(str(name)) <= 64
            or str(name) in (".", "..") or any(c in "/\\" or not c.isprintable() for c in str(name))):
        raise _err(prefix, f"{path}.name", "must be 1 to 64 printable characters without '/' or '\\' (it names the "
                                           f"block's files); got {brief(name)}")
    return str(name)


def check_blocks(blocks: Any, *, decoder_kind: str, seed: int = 0, prefix: str = "session") -> list[dict]:
    """Validate a block list and fill its defaults (``name``, ``task_params``, ``max_seconds``).

    Raises
    ------
    ConfigError
        Naming the field (``session.blocks[2].task``), what is allowed and what was given; also
        for an order that cannot run (a closed-loop block before any ``fit``, a ``refit`` without
        a closed-loop block since the fit or with a decoder other than ``refit_kalman``).
    """
    if not isinstance(blocks, list) or not blocks:
        raise _err(prefix, "blocks", f"must be a non-empty list of blocks; got {brief(blocks)}")
    out: list[dict] = []
    fitted = False
    n_closed = 0
    for i, b in enumerate(blocks):
        path = f"blocks[{i}]"
        if not isinstance(b, dict):
            raise _err(prefix, path, f"must be a mapping; got {type(b).__name__}")
        unknown = sorted(str(k) for k in b if k not in _BLOCK_KEYS)
        if unknown:
            raise _err(prefix, path, f"has unknown key(s) {unknown[:10]}; allowed: {sorted(_BLOCK_KEYS)}")
        b = dict(b)
        kind = b.get("kind")
        if kind not in BLOCK_KINDS:
            raise _err(prefix, f"{path}.kind", f"must be one of {list(BLOCK_KINDS)}; got {brief(kind)}")
        b["name"] = _block_name(prefix, path, b.get("name", f"{i:02d}-{kind}"))
        if any(x["name"] == b["name"] for x in out):
            raise _err(prefix, f"{path}.name", f"{b['name']!r} is the name of an earlier block too; give each "
                                               "block a name of its own")
        if kind in TASK_BLOCKS:
            task = b.get("task")
            if task not in TASKS:
                raise _err(prefix, f"{path}.task", f"must be one of {list(TASKS)}; got {brief(task)}")
            tp = b.get("task_params", {}) or {}
            if not isinstance(tp, dict):
                raise _err(prefix, f"{path}.task_params", f"must be a mapping; got {type(tp).__name__}")
            b["task_params"] = dict(tp)
            if "seconds" in b and b["seconds"] is not None:
                b["seconds"] = _number(prefix, f"{path}.seconds", b["seconds"])
            elif task != "chess":
                raise _err(prefix, f"{path}.seconds", f"is required for a {task} block")
            b["max_seconds"] = _number(prefix, f"{path}.max_seconds", b.get("max_seconds", 3600.0))
            try:
                make_task(task, b["task_params"], seed=seed)
            except (ConfigError, TypeError, ValueError) as exc:
                raise _err(prefix, f"{path}.task_params", f"is invalid for {task}: {exc}") from exc
        else:
            extra = sorted(set(b) - {"name", "kind"})
            if extra:
                raise _err(prefix, path, f"({kind}) takes only 'name' and 'kind'; got also {extra}")
        needs_decoder = kind in ("closed_loop", "evaluation") and decoder_kind != "perfect"
        if needs_decoder and not fitted:
            raise _err(prefix, f"{path}.kind", f"is {kind!r} but no 'fit' block comes before it")
        if kind == "fit":
            if not any(x["kind"] == "calibration" for x in out):
                raise _err(prefix, f"{path}.kind", "is 'fit' but no 'calibration' block comes before it")
            fitted = True
            n_closed = 0
        if kind == "closed_loop":
            n_closed += 1
        if kind == "refit":
            if decoder_kind != "refit_kalman":
                raise _err(prefix, f"{path}.kind", f"'refit' needs decoder.kind 'refit_kalman'; got {decoder_kind!r}")
            if n_closed == 0:
                raise _err(prefix, f"{path}.kind", "is 'refit' but no 'closed_loop' block comes before it since the fit")
        out.append(b)
    return out
