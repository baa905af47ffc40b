"""SR-70 (docs/safety/requirements.yaml): the operator server binds to a loopback address unless told
otherwise, from the Python API and from ``cortexlink serve``. No graph runs here: the server is only
constructed (its controller is not used until a request comes) and bound to a free port."""

from __future__ import annotations

import ipaddress
import socket

import pytest


@pytest.mark.req("SR-70")
def test_the_server_binds_to_loopback_by_default(monkeypatch):
    from cortexlink.cli.main import build_parser
    from cortexlink.web.server import OperatorServer

    srv = OperatorServer(object(), port=0)              # host not given
    try:
        host, port = srv._httpd.server_address[:2]
        assert ipaddress.ip_address(host).is_loopback and srv.loopback and srv.token is None
        assert srv.url == f"http://127.0.0.1:{port}/"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass                                          # it listens there
    finally:
        srv.stop()
    monkeypatch.delenv("CORTEXLINK_TOKEN", raising=False)
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.token is None
