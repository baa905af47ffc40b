"""Operator web UI: watch the array, the decoder and the task; calibrate, fit, run, stop.

A leaf package (nothing in cortexlink imports it) and light to import: the session runs in
:class:`~cortexlink.web.controller.SessionController` (a paced real-time worker thread that owns
the :class:`~cortexlink.tasks.loop.ClosedLoop`), which publishes one small snapshot per bin
into a latest-value holder; :class:`~cortexlink.web.server.OperatorServer` (standard library
``http.server``) reads that holder at a bounded rate per browser, streams it as Server-Sent
Events and forwards JSON control requests. The real-time worker never waits for a browser.

Start it with ``cortexlink serve``.
"""

__all__ = ["SessionController", "OperatorServer", "ControlError"]


def __getattr__(name: str):
    if name in ("SessionController", "ControlError"):
        from cortexlink.web import controller

        return getattr(controller, name)
    if name == "OperatorServer":
        from cortexlink.web.server import OperatorServer

        return OperatorServer
    raise AttributeError(f"module 'cortexlink.web' has no attribute {name!r}")
