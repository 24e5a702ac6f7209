"""The loop of a child process of the process pool: run one job at a time, report back.

Messages to the child: ``("run", job_id, queue, name, attempts_made, module, task_name,
args, kwargs, children)`` (children: a flow parent's children outcomes, or None) or
``None`` (exit). Messages from the child: reports of progress and log
lines, and ``("done", job_id, ok, value)`` where value
is the result as JSON text, or ``(reason, traceback, final)`` for a failure.
Reports are ``("report", queue, job_id, kind, payload)``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from taskflow import _json
from taskflow.control import ControlSignal
from taskflow.errors import EncodeError, UnrecoverableError

WATCH_INTERVAL_S = 1.0


class _Reporter:
    """Sends a child's progress and log lines to the worker (from any thread)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def report(self, context: Any, kind: str, payload: str) -> None:
        self.send(("report", context.queue, context.id, kind, payload))

    def update_data(self, context: Any, changes: dict[str, Any]) -> None:
        self.send(("report", context.queue, context.id, "data", _json.dumps(changes, "data")))

    def add_children(self, context: Any, signatures: list[Any]) -> list[Any]:
        raise RuntimeError("add_children() is not available in child processes: run the "
                           "parent step in the thread or async pool")

    aadd_children = add_children

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)


def find_task_function(module_name: str, task_name: str) -> Any:
    """The function of the task named ``task_name``, found in the module that defines it."""
    from taskflow.app import App
    from taskflow.task import Task

    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, Task) and value.name == task_name:
            return value.fn
        if isinstance(value, App) and task_name in value.tasks:
            return value.tasks[task_name].fn
    raise LookupError(f"no task named {task_name!r} in module {module_name!r}")


def _run_one(reporter: _Reporter, message: tuple[Any, ...]) -> tuple[Any, ...]:
    from taskflow.job import JobContext, _current

    _, job_id, queue, name, attempts, module, task_name, args, kwargs, children = message
    context = JobContext(job_id, queue, name, attempts, reporter)
    if children is not None:
        context.set_children(*children)
    token = _current.set(context)
    try:
        fn = find_task_function(module, task_name)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return ("done", job_id, True, _json.dumps(result, f"result of {name}"))
    except ControlSignal as signal_:
        return ("done", job_id, "signal", signal_)
    except BaseException as exc:
        final = isinstance(exc, UnrecoverableError | EncodeError | LookupError)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = "".join(traceback.format_exception(exc))
        return ("done", job_id, False, (reason, text, final))
    finally:
        _current.reset(token)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _watch_worker(worker_pid: int) -> None:
    """End this child when its worker is gone (killed with -9, say): a job must not run on
    here while the stalled check gives it to another worker."""
    while True:
        time.sleep(WATCH_INTERVAL_S)
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def child_main(conn: Connection, worker_pid: int) -> None:
    """Entry point of a pool child: serve jobs until told to stop or the pipe closes.

    A Ctrl-C or SIGTERM sent to the whole process group is the worker's to handle (it
    lets running jobs finish): children ignore both.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_worker, args=(worker_pid,), daemon=True,
                     name="taskflow-watch-worker").start()
    reporter = _Reporter(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        reporter.send(_run_one(reporter, message))
