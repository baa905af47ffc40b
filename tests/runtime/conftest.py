"""Fixtures for the runtime tests: a real redis-server for the Redis Streams bus."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cortexlink.runtime import redis_server as _rs


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """Path of redis-server; skips the test without one, fails it under CI=true."""
    exe = _rs.find_redis_server()
    if exe is None:
        reason = ("redis-server not found on PATH or in /usr/bin, /usr/sbin, /usr/local/bin "
                  "(Debian/Ubuntu: apt-get install redis-server)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="session")
def redis_server(redis_executable: str) -> Iterator[_rs.RedisServer]:
    """A started loopback RedisServer shared by the session, stopped at the end.

    Tests that use it must not stop or reconfigure it; start a private
    ``RedisServer`` for that.
    """
    srv = _rs.RedisServer(executable=redis_executable).start()
    try:
        yield srv
    finally:
        srv.stop()
