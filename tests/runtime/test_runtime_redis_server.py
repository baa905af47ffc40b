"""RedisServer / connect / tuned_for_latency against a real redis-server on loopback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.runtime.redis_server import (
    RedisServer,
    RedisServerError,
    RedisUnavailable,
    connect,
    find_redis_server,
    tuned_for_latency,
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_server(redis_executable):
    """A RedisServer the test may stop or reconfigure; always stopped afterwards."""
    servers: list[RedisServer] = []

    def make(**kw) -> RedisServer:
        srv = RedisServer(**kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def test_find_redis_server_gives_an_executable(redis_executable):
    exe = redis_executable
    assert exe == find_redis_server()
    assert os.path.isabs(exe) and os.access(exe, os.X_OK)
    assert os.path.basename(exe) == "redis-server"


def test_shared_server_answers_and_reports_its_address(redis_server):
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    assert _alive(redis_server.pid)
    r = redis_server.client()
    try:
        assert r.ping() is True
    finally:
        r.close()


def test_persistence_off_loopback_only_own_dir(redis_server):
    r = redis_server.client(decode_responses=True)
    try:
        cfg = {k: r.config_get(k)[k] for k in ("save", "appendonly", "bind", "protected-mode",
                                              "daemonize", "dir", "port")}
    finally:
        r.close()
    assert cfg["save"] == ""
    assert cfg["appendonly"] == "no"
    assert cfg["bind"] == "127.0.0.1"
    assert cfg["protected-mode"] == "yes"
    assert cfg["daemonize"] == "no"
    assert int(cfg["port"]) == redis_server.port
    assert os.path.realpath(cfg["dir"]) == os.path.realpath(redis_server.workdir)
    assert os.path.basename(redis_server.workdir).startswith("cortexlink-redis-")


def test_port_is_unknown_before_start_and_free_ports_differ(private_server):
    a, b = private_server(), private_server()
    with pytest.raises(RedisServerError, match="not been started"):
        _ = a.port
    a.start()
    b.start()
    assert a.port != b.port
    for srv in (a, b):
        c = srv.client()
        try:
            assert c.ping()
        finally:
            c.close()


def test_explicit_port_is_used(private_server):
    port = _closed_port()
    srv = private_server(port=port).start()
    assert srv.port == port and srv.url.endswith(f":{port}")


def test_stop_is_idempotent_and_leaves_nothing(private_server):
    srv = private_server().start()
    pid, workdir, url = srv.pid, srv.workdir, srv.url
    assert _alive(pid) and workdir.is_dir()
    srv.stop()
    srv.stop()  # second call is a no-op
    assert not srv.running
    assert not _alive(pid)
    assert not workdir.exists()
    with pytest.raises(RedisUnavailable):
        connect(url, timeout_s=0.5)


def test_stop_before_start_is_harmless():
    RedisServer().stop()


def test_context_manager_starts_and_stops(redis_executable):
    with RedisServer() as srv:
        pid = srv.pid
        assert srv.running and _alive(pid)
    assert not srv.running and not _alive(pid)


def test_missing_executable_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no" / "redis-server")
    with pytest.raises(RedisServerError, match="executable") as ei:
        RedisServer(executable=missing).start()
    assert missing in str(ei.value)
    assert isinstance(ei.value, CortexlinkError) and isinstance(ei.value, RuntimeError)


def test_failed_start_quotes_the_server_log(private_server):
    srv = private_server(extra_args=("--no-such-directive", "1"))
    with pytest.raises(RedisServerError, match="exited with code") as ei:
        srv.start(timeout_s=5.0)
    msg = str(ei.value)
    assert "server log" in msg
    assert "no-such-directive" in msg  # redis-server's own complaint is quoted
    assert not srv.running


def test_taken_port_fails_with_the_reason(private_server):
    a = private_server().start()
    b = private_server(port=a.port)
    with pytest.raises(RedisServerError, match="in use"):
        b.start(timeout_s=5.0)
    assert not b.running
    assert a.running  # the first server is untouched (not shut down by b's clean-up)
    c = a.client()
    try:
        assert c.ping()
    finally:
        c.close()


def test_host_must_be_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        RedisServer(host="0.0.0.0")
    with pytest.raises(ConfigError, match="port"):
        RedisServer(port=70000)
    with pytest.raises(ConfigError, match="extra_args"):
        RedisServer(extra_args="--save 60 1")


def test_connect_to_closed_port_names_the_url():
    url = f"redis://127.0.0.1:{_closed_port()}"
    with pytest.raises(RedisUnavailable) as ei:
        connect(url, timeout_s=0.5)
    assert url in str(ei.value)
    assert isinstance(ei.value, ConnectionError)


def test_connect_rejects_bad_urls():
    with pytest.raises(ConfigError, match="url must start with"):
        connect("http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="timeout_s"):
        connect("redis://127.0.0.1:6379", timeout_s=0)


def test_connect_reaches_a_running_server(redis_server):
    r = connect(redis_server.url)
    try:
        assert r.ping() is True
    finally:
        r.close()


def test_tuned_for_latency_turns_persistence_off(private_server):
    srv = private_server(extra_args=("--save", "3600 1", "--appendonly", "yes")).start()
    r = srv.client()
    try:
        rep = tuned_for_latency(r)
        assert rep["before"]["save"] == "3600 1"
        assert rep["before"]["appendonly"] == "yes"
        assert rep["after"]["save"] == "" and rep["after"]["appendonly"] == "no"
        assert sorted(rep["changed"]) == ["appendonly", "save"]
        assert rep["error"] is None
        again = tuned_for_latency(r)
        assert again["changed"] == [] and again["before"] == again["after"]
    finally:
        r.close()


def test_tuned_for_latency_reports_a_refused_config(private_server):
    srv = private_server(extra_args=("--rename-command", "CONFIG", "")).start()  # as managed services do
    r = srv.client()
    try:
        with pytest.raises(RedisServerError, match="could not read or set"):
            tuned_for_latency(r)
        rep = tuned_for_latency(r, strict=False)
        assert "CONFIG" in rep["error"] and rep["changed"] == []
    finally:
        r.close()


def test_stream_round_trip_of_a_binary_chunk(redis_server):
    payload = np.arange(1024 * 30, dtype=np.int16).reshape(30, 1024)
    r = redis_server.client()
    key = "test_runtime_redis_server:chunk"
    try:
        r.delete(key)
        msg_id = r.xadd(key, {"data": payload.tobytes(), "start_sample": 123})
        got = r.xread({key: "0-0"}, count=1, block=1000)
        (_, entries), = got
        (rid, fields), = entries
        assert rid == msg_id
        back = np.frombuffer(fields[b"data"], dtype=np.int16).reshape(30, 1024)
        np.testing.assert_array_equal(back, payload)
        assert int(fields[b"start_sample"]) == 123
    finally:
        r.delete(key)
        r.close()


def test_forgotten_server_is_killed_at_interpreter_exit(redis_executable):
    """The weakref.finalize backstop stops a server whose owner never called stop()."""
    code = textwrap.dedent("""
        import sys
        from cortexlink.runtime.redis_server import RedisServer
        srv = RedisServer().start()
        assert srv.client().ping()
        sys.stdout.write(f"{srv.pid} {srv.workdir}\\n")
        sys.stdout.flush()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pid_s, workdir = out.stdout.split()
    pid = int(pid_s)
    try:
        assert not _alive(pid)
        assert not os.path.exists(workdir)
    finally:
        if _alive(pid):  # do not leak a server if the backstop is broken
            psutil.Process(pid).kill()


@pytest.mark.parametrize("ci", ["true", ""])
def test_fixture_skips_without_redis_server_but_fails_under_ci(tmp_path, ci):
    """No redis-server: the shared fixture skips locally and fails when CI=true."""
    plugin = tmp_path / "no_redis_plugin.py"
    plugin.write_text("import cortexlink.runtime.redis_server as m\nm.find_redis_server = lambda: None\n")
    env = dict(os.environ, CI=ci, PYTHONPATH=os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p))
    test_id = f"{__file__}::test_shared_server_answers_and_reports_its_address"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no_redis_plugin",
                          "-p", "no:cacheprovider", test_id],
                         capture_output=True, text=True, timeout=120, env=env)
    out = res.stdout + res.stderr
    if ci == "true":
        assert res.returncode == 1, out
        assert "CI=true requires it" in out
    else:
        assert res.returncode == 0, out
        assert "1 skipped" in out and "redis-server not found" in out


def test_unix_socket_is_private_and_answers(private_server, tmp_path):
    srv = private_server(unix_socket=True).start()
    path = srv.socket_path
    assert path == srv.workdir / "redis.sock" and srv.unix_url == f"unix://{path}"
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0   # this user only
    c = connect(srv.unix_url, socket_timeout=2.0)
    try:
        c.set("k", b"v")
        assert c.get("k") == b"v"
        assert c.connection_pool.connection_kwargs["path"] == str(path)
    finally:
        c.close()
    # the same server on TCP as well
    c = srv.client()
    try:
        assert c.get("k") == b"v"
    finally:
        c.close()
    srv.stop()
    assert not path.exists()
    with pytest.raises(RedisUnavailable, match="redis.sock"):
        connect(f"unix://{path}", timeout_s=0.5)


def test_unix_socket_options_are_checked(private_server, tmp_path):
    with pytest.raises(ConfigError, match="unix_socket must be True or False"):
        RedisServer(unix_socket="yes")
    with pytest.raises(RedisServerError, match="has no Unix socket"):
        RedisServer().unix_url
    with pytest.raises(RedisServerError, match="chosen at start"):
        RedisServer(unix_socket=True).socket_path
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    srv = private_server(unix_socket=True, workdir=deep)
    with pytest.raises(RedisServerError, match="longer than the 107 bytes"):
        srv.start()
    assert not srv.running
