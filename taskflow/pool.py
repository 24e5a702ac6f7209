"""The process pool: jobs run in child processes that can die without taking the worker.

Each child runs one job at a time (see :mod:`taskflow._child`). A thread per child reads
its pipe, so a child that dies (segfault, ``os._exit``, OOM kill) is noticed at once:
its job's attempt fails with "worker process died" and a new child takes its place.
Children are recycled after a number of jobs or above a memory size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from taskflow._child import child_main
from taskflow.errors import TaskflowError

logger = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ChildDiedError(TaskflowError):
    """The child process running the job died; the attempt failed (and may be retried)."""


class ChildFailure(Exception):
    """A job raised in a child: its reason, traceback, and whether no retry can help."""

    def __init__(self, reason: str, traceback_text: str, final: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.traceback_text = traceback_text
        self.final = final


Report = Callable[[str, str, str, str], None]  # queue, job id, kind, payload


class _Child:
    """One child process, its pipe, and the job it runs."""

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop, report: Report) -> None:
        parent_end, child_end = multiprocessing.Pipe()
        self.conn: Connection = parent_end
        self.process: BaseProcess = context.Process(
            target=child_main, args=(child_end, os.getpid()), daemon=True,
            name="taskflow-child")
        self.process.start()
        child_end.close()
        self.loop = loop
        self.report = report
        self.future: asyncio.Future[str] | None = None
        self.jobs_done = 0
        self.closing = False
        self.reader = threading.Thread(target=self._read, daemon=True,
                                       name=f"taskflow-child-{self.process.pid}")
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.process.pid}/statm", encoding="ascii") as statm:
                return int(statm.read().split()[1]) * PAGE_SIZE / 2**20
        except (OSError, IndexError, ValueError):
            return 0.0

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                if not self.closing:
                    self.process.join(5)
                    self._to_loop(self._died, self.process.exitcode)
                return
            self._to_loop(self._deliver, message)

    def _to_loop(self, callback: Callable[..., None], arg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(callback, arg)

    def _deliver(self, message: tuple[Any, ...]) -> None:
        if message[0] == "report":
            self.report(*message[1:])
            return
        _, _, ok, value = message
        future, self.future = self.future, None
        if future is None or future.done():
            return
        if ok == "signal":
            future.set_exception(value)  # a control signal, raised again in the worker
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(ChildFailure(*value))

    def _died(self, code: int | None) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            future.set_exception(ChildDiedError(f"worker process died ({how})"))

    def kill(self) -> None:
        if self.process.pid is not None and self.alive:
            os.kill(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):  # a dead child's pipe is closed already
            self.conn.send(None)
        self.process.join(2)
        self.kill()
        self.reader.join(2)
        self.conn.close()


class ProcessPool:
    """Up to ``size`` child processes, started on demand and replaced when they die."""

    def __init__(self, size: int, report: Report, max_jobs_per_child: int | None = None,
                 max_memory_mb: float | None = None) -> None:
        self.size = size
        self.report = report
        self.max_jobs_per_child = max_jobs_per_child
        self.max_memory_mb = max_memory_mb
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
            else "spawn"
        self._context = multiprocessing.get_context(start_method)
        self._idle: list[_Child] = []
        self._busy: dict[str, _Child] = {}
        self._slots = asyncio.Semaphore(size)

    async def run(self, job_key: str, message: tuple[Any, ...], timeout_s: float | None) -> str:
        """Run one job in a child; the result as JSON text. Raises ChildFailure (the task
        raised), ChildDiedError, TimeoutError (the child was killed), CancelledError."""
        async with self._slots:
            child = self._take()
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            child.future = future
            self._busy[job_key] = child
            try:
                child.conn.send(message)
                return await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                child.future = None  # its death is ours: don't report it
                child.kill()  # the only way to stop a job in a child
                raise
            finally:
                del self._busy[job_key]
                child.jobs_done += 1
                self._give_back(child)

    def kill(self, job_key: str) -> bool:
        """Kill the child running ``job_key`` (cancellation); False if none does."""
        child = self._busy.get(job_key)
        if child is None:
            return False
        future, child.future = child.future, None
        if future is not None and not future.done():
            future.set_exception(asyncio.CancelledError())
        child.kill()
        return True

    def _take(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
        return _Child(self._context, asyncio.get_running_loop(), self.report)

    def _give_back(self, child: _Child) -> None:
        worn = self.max_jobs_per_child is not None and child.jobs_done >= self.max_jobs_per_child
        too_big = self.max_memory_mb is not None and child.rss_mb() > self.max_memory_mb
        if not child.alive or worn or too_big:
            if worn or too_big:
                logger.info("recycling child %s after %d job(s)", child.process.pid,
                            child.jobs_done)
            child.close()
            return
        self._idle.append(child)

    def close(self) -> None:
        for child in [*self._idle, *self._busy.values()]:
            child.close()
        self._idle.clear()
