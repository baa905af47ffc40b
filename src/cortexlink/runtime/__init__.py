"""The real-time runtime: graphs of nodes on an in-process or Redis Streams bus, with a watchdog
and a supervisor.

* :mod:`cortexlink.runtime.graph` — graph files (YAML), validation;
* :mod:`cortexlink.runtime.session` — session files compiled into graphs (:func:`session_to_graph`)
  and run (:func:`run_session`): every closed loop runs on the graph;
* :mod:`cortexlink.runtime.node` — the :class:`Node` base class (setup / step / teardown, state,
  counters), the registry of node kinds, and :mod:`cortexlink.runtime.nodes`, the built-in nodes
  (one module per family);
* :mod:`cortexlink.runtime.bus` — :class:`Message`, bounded subscriptions with explicit
  back-pressure, :class:`InProcessBus`; :mod:`cortexlink.runtime.redis_bus` —
  :class:`RedisStreamsBus`; :mod:`cortexlink.runtime.wire` — the message format over Redis;
* :mod:`cortexlink.runtime.runner` — :func:`run_graph`, scheduling, processes, results;
* :mod:`cortexlink.runtime.watchdog`, :mod:`cortexlink.runtime.supervisor` — fail-safe;
* :mod:`cortexlink.runtime.redis_server` — a private ``redis-server`` for ``--redis auto``.

Importing this package is light (numpy only); redis, yaml and the node kinds load on use.
"""

from typing import Any

__all__ = ["load_graph", "run_graph", "session_to_graph", "run_session", "load_session", "Node", "Message", "InProcessBus",
           "RedisStreamsBus", "Watchdog", "Supervisor"]

_LAZY = {
    "load_graph": "cortexlink.runtime.graph",
    "run_graph": "cortexlink.runtime.runner",
    "session_to_graph": "cortexlink.runtime.session",
    "run_session": "cortexlink.runtime.session",
    "load_session": "cortexlink.runtime.session",
    "Node": "cortexlink.runtime.node",
    "Message": "cortexlink.runtime.bus",
    "InProcessBus": "cortexlink.runtime.bus",
    "RedisStreamsBus": "cortexlink.runtime.redis_bus",
    "Watchdog": "cortexlink.runtime.watchdog",
    "Supervisor": "cortexlink.runtime.supervisor",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cortexlink.runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
