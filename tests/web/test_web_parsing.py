"""The operator server's reading of requests (web.parsing), as pure functions: every malformed
request becomes a 4xx Refusal with a message, never another exception (property-based)."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink.web.commands import COMMANDS
from cortexlink.web.parsing import (MAX_BODY_BYTES, MAX_JSON_DEPTH, ROUTES, Refusal, json_depth_exceeds,
                                    parse_control, route)

JSON_HEADERS = {"Content-Type": "application/json"}


def _parse(body: bytes, headers=None, token_set=False):
    h = {**JSON_HEADERS, "Content-Length": str(len(body)), **(headers or {})}
    return parse_control(h, lambda n: body[:n], token_set=token_set)


def _refused(body: bytes, headers=None, **kw) -> Refusal:
    with pytest.raises(Refusal) as ei:
        _parse(body, headers, **kw)
    return ei.value


def test_a_valid_command_is_read():
    assert _parse(b'{"cmd": "calibrate", "seconds": 12}') == ("calibrate", {"seconds": 12.0})
    assert _parse(b'{"cmd": "start", "task": "webgrid", "task_params": {"n": 4}}')[0] == "start"
    # a calibration block of the session's task, or of the one asked for (an autopilot task only)
    assert _parse(b'{"cmd": "calibrate", "task": "webgrid", "task_params": {"n": 9}}') == (
        "calibrate", {"task": "webgrid", "task_params": {"n": 9}})
    r = _refused(b'{"cmd": "calibrate", "task": "chess"}')
    assert r.status == 400 and "calibrate.task must be one of ['centre_out', 'webgrid']" in r.message


@pytest.mark.req("SR-71")
def test_deeply_nested_json_is_refused_before_parsing():
    for body in (b"[" * 20000 + b"]" * 20000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 60000):
        r = _refused(body)
        assert r.status == 400 and f"more than {MAX_JSON_DEPTH} levels deep" in r.message
    # brackets inside strings do not count; a request nested within the limit is read
    assert not json_depth_exceeds(b'{"cmd": "' + b"[" * 100 + b'"}')
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert "unknown command" in _refused(b'{"cmd": "[[[[[[[[[[[[[[[[[[[[[[[["}').message


@pytest.mark.req("SR-71")
def test_transport_mistakes_get_their_status():
    assert _refused(b"{}", {"Content-Type": "text/plain"}).status == 415
    assert _refused(b"{}", {"Origin": "http://evil.example", "Host": "127.0.0.1:1"}).status == 403
    assert _parse(b'{"cmd": "fit"}', {"Origin": "http://evil.example"}, token_set=True) == ("fit", {})
    with pytest.raises(Refusal) as ei:
        parse_control(JSON_HEADERS, lambda n: b"", token_set=False)
    assert ei.value.status == 411
    for length, status in (("12abc", 400), ("-5", 400), ("1_0", 400), ("٣", 400), (str(MAX_BODY_BYTES + 1), 413),
                           ("9" * 5000, 413)):
        with pytest.raises(Refusal) as ei:
            parse_control({**JSON_HEADERS, "Content-Length": length}, lambda n: b"{}", token_set=False)
        assert ei.value.status == status, length
    r = _refused(b'{"cmd": "calibrate", "seconds": ' + b"9" * 5000 + b"}")
    assert r.status == 400 and "calibrate.seconds must be" in r.message
    assert "ended after 2 of 10 bytes" in parse_control_short().message
    assert _refused(b'{"cmd": "\xff"}').status == 400


def parse_control_short():
    with pytest.raises(Refusal) as ei:
        parse_control({**JSON_HEADERS, "Content-Length": "10"}, lambda n: b"{}", token_set=False)
    return ei.value


def test_routes():
    assert route("GET", "/") == "/" and route("POST", "/api/control") == "/api/control"
    assert route("GET", "/static/app.js") == "static:app.js"
    for method, path, status in (("GET", "/api/nothing", 404), ("GET", "/api/control", 405),
                                 ("DELETE", "/", 405), ("POST", "/static/app.js", 405)):
        with pytest.raises(Refusal) as ei:
            route(method, path)
        assert ei.value.status == status and ei.value.message
    with pytest.raises(Refusal) as ei:
        route("GET", "/x" * 50000)
    assert len(ei.value.message) < 300


# ------------------------------------------------------------------------------------------ properties
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                       max_size=4),
                            max_leaves=30)
_commands = st.fixed_dictionaries({"cmd": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=10)},
                                  optional={"seconds": _json_values, "task": _json_values, "task_params": _json_values,
                                            "x": _json_values, "y": _json_values, "name": _json_values,
                                            "enabled": _json_values})
_header_text = st.text(max_size=40)


def _outcome(headers, body, token_set=False):
    try:
        cmd, args = parse_control(headers, lambda n: body[:n], token_set=token_set)
    except Refusal as r:
        assert 400 <= r.status < 500 and r.message and len(r.message) <= 600, (r.status, r.message)
        json.dumps({"ok": False, "error": r.message, **r.extra})          # the answer can be written
        return r.status
    assert isinstance(cmd, str) and isinstance(args, dict)
    return 200


@pytest.mark.req("SR-71")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000) | _json_values.map(lambda v: json.dumps(v).encode())
       | _commands.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_a_command_or_a_4xx_refusal(body):
    _outcome({**JSON_HEADERS, "Content-Length": str(len(body))}, body)


@pytest.mark.req("SR-71")
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Content-Type", "Content-Length", "Origin", "Host", "X-Other"]),
                       _header_text, max_size=5), st.binary(max_size=300), st.booleans())
def test_any_headers_are_a_command_or_a_4xx_refusal(headers, body, token_set):
    _outcome(headers, body, token_set)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=200) | st.sampled_from(sorted(ROUTES) + ["/static/app.js"]))
def test_any_method_and_path_is_an_endpoint_or_a_4xx_refusal(method, path):
    try:
        endpoint = route(method, path)
    except Refusal as r:
        assert r.status in (404, 405) and r.message and len(r.message) < 600
        return
    assert endpoint in ROUTES or endpoint.startswith("static:")
