"""Nodes: the stages of a graph, with a lifecycle, published state and counters.

A node is built from a validated configuration (its ``params``), then

* :meth:`Node.setup` acquires what it needs (models, devices, files);
* :meth:`Node.step` is called with the messages that arrived on its input ports (an *inbox*:
  ``{port: [Message, ...]}``, only ports with messages) and publishes with :meth:`Node.emit`;
  a *clocked* node (a source) is stepped on its own period instead, with an empty inbox;
* :meth:`Node.stopping` is called when the run stops, before its last pass and the teardown;
* :meth:`Node.teardown` releases them.

Its :attr:`Node.state` is one of :data:`NODE_STATES` and its counters (messages in/out,
dropped on its inputs, step time, failures, restarts, missed deadlines) are published on the
bus by the runtime. The same node code runs on every bus: it only sees messages and its
:class:`NodeContext`.

New node kinds subclass :class:`Node`, declare ``kind``, ``INPUTS``, ``OUTPUTS`` and ``PARAMS``,
and are registered with :func:`register_node`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
import numbers
import os
import time
from typing import Any, Callable, ClassVar

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys
from cortexlink.runtime.bus import POLICIES, Message
from cortexlink.runtime.stats import LatencyStats

logger = logging.getLogger(__name__)

#: Exit status of a process ended by ``inject.exit_at_steps`` (EX_SOFTWARE).
CRASH_EXIT_CODE = 70

__all__ = ["Node", "NodeContext", "Param", "PortSpec", "NodeState", "NODE_STATES", "NODE_KINDS", "BUILTIN_NODES",
           "register_node", "node_class", "REQUIRED", "InjectedFault"]

class NodeState(str, enum.Enum):
    """A node's life: ``starting`` (set-up), ``running``, ``stopped`` (torn down, or given up by
    its supervisor), ``failed`` (its last step or set-up raised; restarted per its policy).
    A ``str`` enum: equal to its value, written to JSON as it."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


NODE_STATES = tuple(NodeState)
#: kind -> Node subclass (filled by :func:`register_node`; built-ins in :mod:`cortexlink.runtime.nodes`).
NODE_KINDS: dict[str, type["Node"]] = {}
#: The built-in kinds -> ``"module:Class"``: a plugin registry that :func:`node_class` imports on
#: first use, so that this module never imports :mod:`cortexlink.runtime.nodes` (which imports it).
BUILTIN_NODES: dict[str, str] = {
    "sim_source": "cortexlink.runtime.nodes.sources:SimSource",
    "replay_source": "cortexlink.runtime.nodes.sources:ReplaySource",
    "lsl_source": "cortexlink.runtime.nodes.sources:LSLSource",
    "bin_clock": "cortexlink.runtime.nodes.sources:BinClock",
    "dsp": "cortexlink.runtime.nodes.dsp:DspNode",
    "raw_link": "cortexlink.runtime.nodes.link:RawLinkNode",
    "decoder": "cortexlink.runtime.nodes.decoder:DecoderNode",
    "participant": "cortexlink.runtime.nodes.participant:ParticipantNode",
    "cursor": "cortexlink.runtime.nodes.cursor:CursorNode",
    "recorder": "cortexlink.runtime.nodes.recorder:RecorderNode",
    "ui_feed": "cortexlink.runtime.nodes.outputs:UiFeedNode",
    "lsl_outlet": "cortexlink.runtime.nodes.outputs:LSLOutletNode",
    "sink": "cortexlink.runtime.nodes.outputs:SinkNode",
    "trace": "cortexlink.runtime.nodes.trace:TraceNode",
    "speech_task": "cortexlink.runtime.nodes.speech:SpeechTaskNode",
    "speaking_participant": "cortexlink.runtime.nodes.speech:SpeakingParticipantNode",
    "phoneme_decoder": "cortexlink.runtime.nodes.speech_decoders:PhonemeDecoderNode",
    "word_decoder": "cortexlink.runtime.nodes.speech_decoders:WordDecoderNode",
    "touch_encoder": "cortexlink.runtime.nodes.stim:TouchEncoderNode",
    "audio_encoder": "cortexlink.runtime.nodes.stim:AudioEncoderNode",
    "stim_interlock": "cortexlink.runtime.nodes.stim:StimInterlockNode",
}


class InjectedFault(RuntimeError):
    """Raised by a node's step at a step number listed in its ``inject.fail_at_steps`` (drills, tests)."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """An input port: the default bound and back-pressure policy of edges into it.

    Attributes
    ----------
    maxlen : int
        Default queue bound of an edge into this port.
    policy : {"block", "drop_oldest", "fail"}
        Default policy of an edge into this port.
    required : bool
        The graph must connect this port.
    feedback : bool
        Edges into this port close a loop (they are left out of the scheduling order, so the
        message is read on the next tick).
    message : str, tuple of str or None
        The kind(s) of message (:data:`cortexlink.runtime.messages.MESSAGE_KINDS`) the port takes;
        None takes any. The graph checks it against the producer's output when it loads.
    replay : bool
        After its process was restarted, the node is given again what this input received
        before (it skips what it had applied: :mod:`cortexlink.runtime.journal`).
    doc : str
    """

    maxlen: int = 256
    policy: str = "drop_oldest"
    required: bool = False
    feedback: bool = False
    message: Any = None
    replay: bool = False
    doc: str = ""


class Param:
    """Declarative check of one node parameter.

    Parameters
    ----------
    kind : {"int", "float", "bool", "str", "list", "dict", "any"}
    default : any
        :data:`REQUIRED` for a parameter that must be given.
    choices : sequence, optional
    lo, hi : float, optional
        Inclusive bounds of numbers.
    gt : float, optional
        Exclusive lower bound.
    nullable : bool
        ``None`` (YAML ``null``) is accepted.
    doc : str
    """

    def __init__(self, kind: str, default: Any = REQUIRED, *, choices: Any = None, lo: float | None = None,
                 hi: float | None = None, gt: float | None = None, nullable: bool = False, doc: str = "") -> None:
        self.kind = kind
        self.default = default
        self.choices = tuple(choices) if choices is not None else None
        self.lo, self.hi, self.gt = lo, hi, gt
        self.nullable = nullable
        self.doc = doc

    def check(self, path: str, value: Any) -> Any:
        """Return the (normalised) value or raise ConfigError naming ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{path} must not be null")
        k = self.kind
        if k == "int":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{path} must be an integer; got {value!r}")
            value = int(value)
        elif k == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
                raise ConfigError(f"{path} must be a finite number; got {value!r}")
            value = float(value)
        elif k == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{path} must be true or false; got {value!r}")
            value = bool(value)
        elif k == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{path} must be a string; got {value!r}")
        elif k == "list":
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise ConfigError(f"{path} must be a list; got {value!r}")
        elif k == "dict":
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{path} must be one of {list(self.choices)}; got {value!r}")
        if k in ("int", "float"):
            if self.gt is not None and not value > self.gt:
                raise ConfigError(f"{path} must be > {self.gt:g}; got {value!r}")
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise ConfigError(f"{path} must be in [{self.lo}, {self.hi}]; got {value!r}")
        return value


def check_params(path: str, spec: dict[str, Param], given: Any) -> dict[str, Any]:
    """Validate ``given`` against ``spec``; fill defaults; errors name ``path.key``."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(f"{path} must be a mapping; got {type(given).__name__}")
    check_keys(path, given, spec)
    out: dict[str, Any] = {}
    for key, p in spec.items():
        if key in given:
            out[key] = p.check(f"{path}.{key}", given[key])
        elif p.default is REQUIRED:
            raise ConfigError(f"{path}.{key} is required ({p.doc or p.kind})")
        else:
            d = p.default
            out[key] = list(d) if isinstance(d, list) else (dict(d) if isinstance(d, dict) else d)
    return out


class NodeContext:
    """What the runtime gives a node: the bus, clocks, graph settings and fault reporting.

    Attributes
    ----------
    bus : Bus
    graph : dict
        The validated graph.
    realtime : bool
        True when sources are paced by the wall clock (``clock: realtime``).
    bin_ms : float
        The graph's loop period (feature bin, decoder step, cursor update).
    deadline_ns : int
        A chunk must be processed within this long of entering the graph.
    stats_from_sample : int
        Latency and deadline statistics count messages from this source sample on.
    out_dir : Path or None
        Where the run writes files (recordings, decoders).
    objects : dict
        In-process handles the caller of the run gave (e.g. an open
        :class:`~cortexlink.io.session_log.SessionRecorder`, progress callbacks), by name; only
        nodes of the main process see them.
    journal : callable
        ``journal(node)``: that node's :class:`~cortexlink.runtime.journal.Journal`, or None
        where none is kept (the main process, one process).
    """

    def __init__(self, *, bus: Any, graph: dict, realtime: bool, now_ns: Callable[[], int],
                 fault: Callable[..., None], request_stop: Callable[[str], None],
                 health: Callable[[], dict], out_dir: Any = None, stats_from_sample: int = 0,
                 deadline_ns: int = 1_000_000, process: str = "main", objects: dict | None = None,
                 reply: Callable[[dict], None] | None = None, fail: Callable[..., None] | None = None,
                 journal: Callable[[str], Any] | None = None) -> None:
        self.bus = bus
        self.graph = graph
        self.realtime = realtime
        self.now_ns = now_ns
        self._fault = fault
        self._request_stop = request_stop
        self._health = health
        self.out_dir = out_dir
        self.bin_ms = float(graph.get("bin_ms", 20.0))
        self.stats_from_sample = int(stats_from_sample)
        self.deadline_ns = int(deadline_ns)
        self.process = process
        self.objects: dict[str, Any] = dict(objects or {})
        self._reply = reply
        self._fail = fail
        self._journal = journal

    def journal(self, node: str) -> Any:
        """``node``'s journal, or None where none is kept (see :mod:`cortexlink.runtime.journal`)."""
        return None if self._journal is None else self._journal(node)

    def fail_run(self, kind: str, *, node: str, message: str, **fields: Any) -> None:
        """End the run on a failure it cannot go on after (e.g. a scheduled fit that failed): the
        cursor is halted, then the run stops and its result names ``message`` (in the main
        process; elsewhere it only asks the run to stop)."""
        if self._fail is not None:
            self._fail(kind, node=node, message=message, **fields)
        else:
            self._request_stop(f"{kind}: {message}")

    def reply(self, payload: dict) -> None:
        """Answer an operator command on ``operator.replies`` (see :meth:`Node.reply`)."""
        if self._reply is not None:
            self._reply(payload)

    def fault(self, kind: str, *, node: str, severity: str = "halt", message: str = "", sample: int = -1,
              **fields: Any) -> None:
        """Report a fault event (``severity``: ``"halt"`` stops the cursor, ``"warning"``, ``"info"``,
        ``"clear"`` ends a halt)."""
        self._fault(kind, node=node, severity=severity, message=message, sample=sample, **fields)

    def request_stop(self, reason: str) -> None:
        """Ask the runtime to end the run (e.g. a task schedule is finished)."""
        self._request_stop(reason)

    def health(self) -> dict:
        """``{node: {"state": str, "n_out": int, "critical": bool, "source": bool}}`` for every node."""
        return self._health()

    def producer(self, node: str, port: str) -> str | None:
        """The node feeding ``node``'s input ``port`` (None if unconnected)."""
        src = self.graph["nodes"][node]["inputs"].get(port)
        return None if src is None else src["from"].split(".", 1)[0]

    def wait_info(self, key: str, timeout_s: float = 30.0) -> dict:
        """A shared value another node published with ``bus.set_info`` (waits for it).

        Raises
        ------
        ConfigError
            Nothing was published under ``key`` within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.bus.get_info(key)
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                raise ConfigError(f"no node published {key!r} within {timeout_s:g} s (is its producer running?)")
            time.sleep(0.01)


class Node:
    """Base class of every node.

    Parameters
    ----------
    name : str
        The node's name in the graph.
    params : dict
        Validated parameters (see ``PARAMS``).
    ctx : NodeContext

    Attributes
    ----------
    state : str
        One of :data:`NODE_STATES`.
    n_in, n_out, n_steps, n_failures, n_restarts, n_missed : int
        Counters (``n_missed``: chunks or bins it finished after their deadline).
    step_stats : LatencyStats
        Duration of each :meth:`step`.
    hop_stats : dict of LatencyStats
        Per input port: time from the message's publication to the start of the step that read it.
    transport_stats : dict of LatencyStats
        Per input port, for messages from another process: publication to reception (decoded).
    """

    kind: ClassVar[str] = ""
    INPUTS: ClassVar[dict[str, PortSpec]] = {}
    #: Output ports: a dict port -> message kind (see :mod:`cortexlink.runtime.messages`), or a
    #: tuple of port names (kinds not declared: not checked).
    OUTPUTS: ClassVar[Any] = ()
    PARAMS: ClassVar[dict[str, Param]] = {}
    #: Fault injection for drills and tests (``inject:`` in the graph); extended by subclasses.
    INJECT: ClassVar[dict[str, Param]] = {
        "fail_at_steps": Param("list", [], doc="step numbers (0-based) at which step() raises InjectedFault"),
        "exit_at_steps": Param("list", [], doc="step numbers at which the node's whole process exits at once "
                                               "(code 70, no clean-up): a crash drill for a node in its own "
                                               "process"),
    }
    #: Stepped on its own period (sources) rather than on input.
    CLOCKED: ClassVar[bool] = False
    #: Also stepped on every pass of the scheduler without input (timers, watchdog).
    TICKS: ClassVar[bool] = False
    #: A failure of this node halts the cursor (default for the kind; ``critical:`` overrides).
    CRITICAL: ClassVar[bool] = True
    #: A source of samples (its stall is a fault).
    SOURCE: ClassVar[bool] = False

    def __init__(self, name: str, params: dict, ctx: NodeContext, *, inject: dict | None = None) -> None:
        self.name = name
        self.params = params
        self.ctx = ctx
        self.inject = inject or {}
        self._fail_at = {int(s) for s in self.inject.get("fail_at_steps", ())}
        self._exit_at = {int(s) for s in self.inject.get("exit_at_steps", ())}
        if self._exit_at:
            self._fail_at |= self._exit_at
        self.state: NodeState = NodeState.STARTING
        self.error: str | None = None
        #: A failure halts the cursor (from the graph's ``critical:``, default ``CRITICAL``).
        self.critical = self.CRITICAL
        #: True once the supervisor stopped restarting it.
        self.gave_up = False
        #: Input subscriptions by port (set by the runtime before setup).
        self.subs: dict = {}
        self.n_in = 0
        self.n_out = 0
        self.n_steps = 0
        self.n_failures = 0
        self.n_restarts = 0
        self.n_missed = 0
        self.step_stats = LatencyStats(1 << 16)
        self.hop_stats: dict[str, LatencyStats] = {}
        #: Per input port, messages from another process only: publication -> decoded here.
        self.transport_stats: dict[str, LatencyStats] = {}
        self._out_seq: dict[str, int] = {p: 0 for p in self.OUTPUTS}
        self._topics = {p: f"{name}.{p}" for p in self.OUTPUTS}
        #: Period of a clocked node in ns (set by the node in setup()).
        self.period_ns = 0

    # -- lifecycle (override) -----------------------------------------------------------
    def setup(self) -> None:
        """Acquire resources; raise ConfigError for a configuration that cannot work."""

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        """Process the messages in ``inbox`` (``{port: [Message, ...]}``) and :meth:`emit` results."""

    def stopping(self, reason: str) -> None:
        """The run is stopping (``reason``: a stop request, SIGINT/SIGTERM, its time is up, a
        failure): called once on every running node, in every process, before the last pass over
        the queued messages and :meth:`teardown`, so that a node makes its outputs safe first (the
        cursor publishes a halted gate)."""

    def teardown(self) -> None:
        """Release resources (called once after the last step, also after a failure)."""

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        """Cross-field checks at graph load (raise ConfigError naming ``nodes.<name>.params.<key>``)."""

    def ready(self, now_ns: int) -> bool:
        """Clocked nodes in ``clock: fast`` runs: False to wait for an input before the next tick."""
        return True

    def summary(self) -> dict:
        """Node-specific results for the run summary (JSON-able)."""
        return {}

    # -- helpers ------------------------------------------------------------------------
    def has_consumers(self, port: str) -> bool:
        """True when some node of the graph reads output ``port`` (a node may skip building a
        message nobody reads)."""
        src = f"{self.name}.{port}"
        return any(inp.get("from") == src for n in self.ctx.graph.get("nodes", {}).values()
                   for inp in (n.get("inputs") or {}).values())

    def emit(self, port: str, payload: Any, *, sample: int, t_enter_ns: int) -> Message:
        """Publish ``payload`` on output ``port`` (topic ``"<name>.<port>"``)."""
        seq = self._out_seq[port]
        self._out_seq[port] = seq + 1
        msg = Message(self._topics[port], seq, int(sample), int(t_enter_ns), payload, time.monotonic_ns())
        self.ctx.bus.publish(msg)
        self.n_out += 1
        return msg

    def reply(self, cmd: dict, result: Any = None, *, error: str | None = None, status: int = 200,
              **fields: Any) -> None:
        """Answer operator command ``cmd`` (a message of ``operator.commands``): ``result`` when it
        was applied, or ``error`` with an HTTP-like ``status`` (409: not possible in this state)."""
        out = {"id": cmd.get("id"), "cmd": cmd.get("cmd"), "node": self.name, "ok": error is None,
               "status": status if error is not None else 200, **fields}
        if error is None:
            out["result"] = result
        else:
            out["error"] = error
        self.ctx.reply(out)

    def fault(self, kind: str, *, severity: str = "halt", message: str = "", sample: int = -1, **fields: Any) -> None:
        """Report a fault event from this node."""
        self.ctx.fault(kind, node=self.name, severity=severity, message=message, sample=sample, **fields)

    def _check_inject(self) -> None:
        if self.n_steps in self._exit_at and self.ctx.process != "main":
            logger.error("node %r: injected crash of process %s at step %d", self.name, self.ctx.process,
                         self.n_steps)
            os._exit(CRASH_EXIT_CODE)
        if self.n_steps in self._fail_at:
            raise InjectedFault(f"node {self.name!r}: injected failure at step {self.n_steps}")

    def info(self) -> dict:
        """Published state and counters (JSON-able)."""
        st = self.step_stats
        return {"kind": self.kind, "state": self.state, "error": self.error, "n_in": self.n_in,
                "n_out": self.n_out, "n_steps": self.n_steps, "n_failures": self.n_failures,
                "n_restarts": self.n_restarts, "n_missed": self.n_missed, "critical": self.critical,
                "gave_up": self.gave_up, "source": self.SOURCE,
                "n_dropped": sum(s.n_dropped for s in self.subs.values()),
                "inputs": {p: s.stats() for p, s in self.subs.items()},
                "step_mean_ms": (st.sum_ns / st.n / 1e6) if st.n else None, "step_max_ms": st.max_ns / 1e6,
                "process": self.ctx.process}

    def latency_info(self) -> dict:
        """Step-time and per-input hop-time summaries (ms)."""
        return {"step": self.step_stats.summary(),
                "hops": {p: s.summary() for p, s in self.hop_stats.items()},
                "transport": {p: s.summary() for p, s in self.transport_stats.items() if s.n}}


def register_node(cls: type[Node]) -> type[Node]:
    """Class decorator: make ``cls`` available to graphs as ``kind: <cls.kind>``."""
    if not cls.kind:
        raise ConfigError(f"{cls.__name__} must set a non-empty 'kind'")
    for port, spec in cls.INPUTS.items():
        if spec.policy not in POLICIES:
            raise ConfigError(f"{cls.__name__}.INPUTS[{port!r}].policy must be one of {POLICIES}")
    NODE_KINDS[cls.kind] = cls
    return cls


def node_class(kind: str) -> type[Node]:
    """The registered class of ``kind`` (built-ins, :data:`BUILTIN_NODES`, are imported on first use)."""
    if kind not in NODE_KINDS and kind in BUILTIN_NODES:
        module, _, name = BUILTIN_NODES[kind].partition(":")
        getattr(importlib.import_module(module), name)      # importing it registers it
    try:
        return NODE_KINDS[kind]
    except KeyError:
        raise ConfigError(f"node kind must be one of {sorted(NODE_KINDS.keys() | BUILTIN_NODES.keys())}; "
                          f"got {kind!r}") from None
