"""The operator web server's reading of requests, apart from its sockets: which endpoint a request
asks for (:func:`route`) and what a ``POST /api/control`` request commands (:func:`parse_control`).

Pure functions of the request's method, path, headers and body: every malformed request becomes a
:class:`Refusal` (a 4xx status and a message saying what is wrong), never another exception, so the
server answers 500 only for a fault of its own.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from cortexlink.core.errors import CortexlinkError
from cortexlink.core.yamlfile import brief
from cortexlink.web.commands import ControlError, validate_command

__all__ = ["Refusal", "route", "parse_control", "json_depth_exceeds", "MAX_BODY_BYTES", "MAX_JSON_DEPTH", "ROUTES"]

MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting of arrays and objects in a control request (real ones nest two levels).
MAX_JSON_DEPTH = 16
#: path -> the one method it takes (``/static/<name>``: GET).
ROUTES = {"/": "GET", "/index.html": "GET", "/api/stream": "GET", "/api/state": "GET", "/api/health": "GET",
          "/api/commands": "GET", "/api/control": "POST"}


class Refusal(Exception):
    """A request answered with a 4xx status: ``status``, ``message`` (what is wrong, what to do),
    ``headers`` to add, ``extra`` fields for the JSON answer."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def route(method: str, path: str) -> str:
    """The endpoint ``method path`` asks for: a key of the route table, or ``"static:<name>"``.

    Raises
    ------
    Refusal
        404 for an unknown path, 405 (with ``Allow``) for a method the path does not take.
    """
    if path.startswith("/static/"):
        allowed = "GET"
        endpoint = "static:" + path[len("/static/"):]
    else:
        allowed = ROUTES.get(path)
        endpoint = path
        if allowed is None:
            raise Refusal(404, f"no such endpoint {brief(path)}; the UI is at / and the API under /api/")
    if method != allowed:
        raise Refusal(405, f"{brief(method)[1:-1]} is not allowed on {brief(path)[1:-1]}; use {allowed}",
                      {"Allow": allowed})
    return endpoint


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text ``raw`` nests arrays and objects more than ``limit`` levels deep (brackets
    inside strings do not count). Linear, without recursion: checked before parsing."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_str = esc = False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:                 # backslash
                esc = True
            elif b == 0x22:                 # closing quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b == 0x5B or b == 0x7B:        # [ {
            depth += 1
            if depth > limit:
                return True
        elif b == 0x5D or b == 0x7D:        # ] }
            depth -= 1
    return False


def _json_int(text: str) -> Any:
    """JSON integers of more than 30 digits become floats (inf when too large), never an error."""
    return int(text) if len(text) <= 30 else float(text)


def parse_control(headers: Any, read: Callable[[int], bytes], *, token_set: bool) -> tuple[str, dict]:
    """Check a ``POST /api/control`` request and return its command ``(name, fields)``.

    Parameters
    ----------
    headers : mapping with ``get``
        The request's headers.
    read : callable
        ``read(n)`` returns up to ``n`` bytes of the body (called once, with the declared length).
    token_set : bool
        The server has a token (then the token, not the Origin, guards against other sites).

    Raises
    ------
    Refusal
        415 (not JSON), 403 (cross-origin), 411 (no length), 413 (over ``MAX_BODY_BYTES``), 400
        (malformed length, body shorter than declared, not UTF-8, not JSON, nested deeper than
        ``MAX_JSON_DEPTH``, not a valid command); a ControlError's own status.
    """
    ctype = headers.get("Content-Type") or ""
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise Refusal(415, f"Content-Type must be application/json; got {brief(ctype or 'none')}")
    origin = headers.get("Origin")
    if origin is not None and not token_set:
        host = headers.get("Host") or ""
        if origin not in (f"http://{host}", f"https://{host}"):
            raise Refusal(403, f"cross-origin request from {brief(origin)} refused")
    length = headers.get("Content-Length")
    if length is None:
        raise Refusal(411, "Content-Length is required")
    if not isinstance(length, str) or not length.strip().isdigit() or not length.strip().isascii():
        raise Refusal(400, f"Content-Length must be an integer; got {brief(length)}")
    n = int(length.strip()) if len(length.strip()) <= 12 else MAX_BODY_BYTES + 1
    if n > MAX_BODY_BYTES:
        raise Refusal(413, f"request body must be at most {MAX_BODY_BYTES} bytes; got {brief(length.strip())[1:-1]}")
    raw = read(n) if n else b""
    if len(raw) < n:
        raise Refusal(400, f"request body ended after {len(raw)} of {n} bytes")
    if json_depth_exceeds(raw):
        raise Refusal(400, f"request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep; "
                           "a control request is a flat JSON object such as {\"cmd\": \"fit\"}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_int=_json_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refusal(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    try:
        return validate_command(obj)
    except ControlError as exc:
        raise Refusal(exc.status, str(exc)[:500], cmd=_cmd_of(obj)) from None
    except CortexlinkError as exc:
        raise Refusal(400, str(exc)[:500], cmd=_cmd_of(obj)) from None


def _cmd_of(obj: Any) -> Any:
    cmd = obj.get("cmd") if isinstance(obj, dict) else None
    return cmd if isinstance(cmd, str) and len(cmd) <= 64 else None
