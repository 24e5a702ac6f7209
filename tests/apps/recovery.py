"""The app that worker subprocesses of tests/test_recovery.py run.

Started as ``taskflow worker tests.apps.recovery:app``; the environment says where:

``TASKFLOW_BROKER_URL``  the server under test
``TASKFLOW_TEST_PREFIX`` the test's own key prefix

The tests register the same tasks on their own App with :func:`register`, so the
names and signatures match what the workers run.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from taskflow import App, Task, current_job

URL_ENV = "TASKFLOW_BROKER_URL"
PREFIX_ENV = "TASKFLOW_TEST_PREFIX"


def runs_key(prefix: str) -> str:
    """A hash: job id -> how many times a task started on it."""
    return f"{prefix}:test:runs"


def started_key(prefix: str) -> str:
    """A list: job ids, one entry each time a task starts on one."""
    return f"{prefix}:test:started"


def gate_key(prefix: str) -> str:
    """While this key exists, gated runs of ``sleepy`` wait (up to GATE_MAX_S)."""
    return f"{prefix}:test:gate"


GATE_MAX_S = 60.0


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _client(url: str) -> redis.Redis:
    with _clients_lock:
        found = _clients.get(url)
        if found is None:
            found = _clients[url] = redis.Redis.from_url(url, decode_responses=True)
        return found


def register(app: App) -> tuple[Task[Any, Any], Task[Any, Any]]:
    """Register the test tasks on ``app``: (sleepy, boom)."""

    @app.task(name="recovery.sleepy")
    def sleepy(seconds: float, value: Any = None, first_s: float | None = None,
               gated: bool = False) -> dict[str, Any]:
        """Record the start (run count, started list); when ``gated``, wait while the
        gate key exists; then sleep ``first_s`` on the first run (if given), else
        ``seconds``. Returns the value, the run number and the worker's pid."""
        job_id = current_job().id
        client = _client(app.url)
        run = int(client.hincrby(runs_key(app.prefix), job_id, 1))
        client.rpush(started_key(app.prefix), job_id)
        deadline = time.monotonic() + GATE_MAX_S
        while gated and client.exists(gate_key(app.prefix)) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(first_s if run == 1 and first_s is not None else seconds)
        return {"value": value, "run": run, "pid": os.getpid()}

    @app.task(name="recovery.boom")
    def boom(message: str) -> None:
        raise ValueError(message)

    return sleepy, boom


def pids_key(prefix: str) -> str:
    """A list: the pid of each process that started ``recovery.pid_sleep``."""
    return f"{prefix}:test:pids"


def register_pid_sleep(app: App) -> Task[Any, Any]:
    """Register a task that records its process id, then sleeps."""

    @app.task(name="recovery.pid_sleep", pool="processes")
    def pid_sleep(seconds: float) -> int:
        _client(app.url).rpush(pids_key(app.prefix), os.getpid())
        time.sleep(seconds)
        return os.getpid()

    return pid_sleep


def register_flow(app: App) -> Task[Any, Any]:
    """Register a flow parent that records its runs and returns its children's results."""

    @app.task(name="recovery.collect")
    def collect(label: str) -> dict[str, Any]:
        job_id = current_job().id
        _client(app.url).hincrby(runs_key(app.prefix), job_id, 1)
        return {"label": label, "results": current_job().results()}

    return collect


app = App("recovery", os.environ.get(URL_ENV), prefix=os.environ.get(PREFIX_ENV) or "bull")
sleepy, boom = register(app)
collect = register_flow(app)
pid_sleep = register_pid_sleep(app)
