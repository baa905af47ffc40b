"""Operator web UI: watch the array, the decoder and the task; calibrate, fit, run, stop.

A leaf package (nothing in cortexlink imports it) and light to import. The UI is a client of the
runtime graph's bus: :class:`~cortexlink.web.controller.OperatorController` runs an interactive
graph (:mod:`cortexlink.web.graphs`; in a background thread, or in a child process over Redis),
sends operator commands on the ``operator.commands`` topic and reads the snapshots the graph's
``ui_feed`` node publishes into a latest-value holder; :class:`~cortexlink.web.server.OperatorServer`
(standard library ``http.server``) reads that holder at a bounded rate per browser, streams it
as Server-Sent Events and forwards JSON control requests. Nothing here is on the real-time path.

Start it with ``cortexlink serve``.
"""

__all__ = ["OperatorController", "OperatorServer", "ControlError"]


def __getattr__(name: str):
    if name in ("OperatorController", "ControlError"):
        from cortexlink.web import controller

        return getattr(controller, name)
    if name == "OperatorServer":
        from cortexlink.web.server import OperatorServer

        return OperatorServer
    raise AttributeError(f"module 'cortexlink.web' has no attribute {name!r}")
