"""Fixtures of the operator web UI tests: a small fast session, a controller (a client of the graph it runs),
a server, HTTP helpers."""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: A small session that runs several times faster than real time on any machine.
SMALL_SESSION = {
    "name": "web-test",
    "seed": 0,
    "implant": {"preset": "default", "n_channels": 48},
    "decoder": {"kind": "refit_kalman", "params": {}},
    "click_decoder": {"enabled": True, "params": {}},
    "blocks": [
        {"kind": "calibration", "task": "centre_out", "seconds": 16.0, "task_params": {"click": True}},
        {"kind": "fit"},
        # long blocks (150 s of wall time at the tests' 4x pace): a test on a loaded machine never
        # sees a block end by itself while it is still checking it
        {"kind": "closed_loop", "task": "webgrid", "seconds": 600.0, "task_params": {"n": 4}},
        {"kind": "evaluation", "task": "centre_out", "seconds": 600.0, "task_params": {"click": True}},
    ],
}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through a proxy


def http(method, url, body=None, headers=None, timeout=60.0):
    """``(status, headers, parsed JSON or bytes)``; every response is closed (``timeout``: generous for a
    loaded machine; an answer returns at once)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            status, hdrs, raw = e.code, dict(e.headers), e.read()
    if hdrs.get("Content-Type", "").startswith("application/json"):
        return status, hdrs, json.loads(raw)
    return status, hdrs, raw


@pytest.fixture(scope="session")
def web_http():
    """The :func:`http` helper (test modules cannot import a conftest by name)."""
    return http


@pytest.fixture(scope="session")
def small_session():
    import copy

    return copy.deepcopy(SMALL_SESSION)


def small_graph(rows=False, **kw):
    """The interactive graph of the small session; ``rows``: with a ``rows`` sink keeping every
    cursor row (``cursor.bins``) for per-bin checks."""
    import copy

    from cortexlink.web.graphs import operator_graph

    g = operator_graph(copy.deepcopy(SMALL_SESSION), **kw)
    if rows:
        g["nodes"]["rows"] = {"kind": "sink", "params": {"keep": 200000},
                              "inputs": {"data": {"from": "cursor.bins", "maxlen": 200000}}}
    return g


@pytest.fixture(scope="session")
def web_graph():
    """:func:`small_graph` (test modules cannot import a conftest by name)."""
    return small_graph


@pytest.fixture
def make_controller(tmp_path):
    """Build and start controllers (stopped at the end of the test); by default on the small
    session's graph, paced at 4x real time."""
    from cortexlink.web.controller import OperatorController

    made = []

    def make(graph=None, **kw):
        kw.setdefault("speed", 4.0)
        kw.setdefault("record_dir", tmp_path / "recordings")
        if graph is None and "session" not in kw:
            graph = small_graph(n_channels=kw.pop("n_channels", None))
        ctl = OperatorController(graph, **kw)
        made.append(ctl)
        return ctl.start()

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def served(make_controller):
    """A started controller and an :class:`OperatorServer` on 127.0.0.1 with a free port."""
    from cortexlink.web.server import OperatorServer

    ctl = make_controller()
    srv = OperatorServer(ctl, "127.0.0.1", 0).start()
    try:
        yield ctl, srv, f"http://127.0.0.1:{srv.port}"
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def artifact_dir():
    """Where screenshots go: $CORTEXLINK_TEST_ARTIFACTS or tests/artifacts (git-ignored)."""
    d = Path(os.environ.get("CORTEXLINK_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d
