"""Where a job's function runs: the event loop, a thread pool, or a child process.

``async``: coroutines (and, with the async pool, plain functions) on the worker's loop.
A timeout or a cancellation cancels the coroutine.

``threads``: plain functions on a thread pool. Python can't stop a thread: on timeout
the attempt fails once the function returns (its result is dropped), and the job keeps
its lock until then, so it never runs twice at once. A cancelled thread job sees
``current_job().cancelled`` become true and may stop early.

``processes``: plain functions (or coroutines, run with ``asyncio.run``) in child
processes. A timeout or a cancellation kills the child; a child that dies fails the
attempt with "worker process died", and the worker replaces it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from taskflow.errors import JobCancelledError, JobTimeoutError
from taskflow.job import JobContext, _current
from taskflow.pool import ProcessPool

if TYPE_CHECKING:
    from taskflow.task import Task

Place = Literal["async", "threads", "processes"]
PLACES = ("async", "threads", "processes")


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already encoded as JSON text (by a child process)."""

    text: str


class Executors:
    """Runs each job where its task (or else the worker) says, with timeouts and cancels."""

    def __init__(self, default: Place, size: int, report: Any,
                 max_jobs_per_child: int | None = None,
                 max_memory_mb: float | None = None) -> None:
        self.default = default
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="taskflow-job")
        self._processes: ProcessPool | None = None
        self._size = size
        self._report = report
        self._child_limits = (max_jobs_per_child, max_memory_mb)
        self._coroutines: dict[str, asyncio.Future[Any]] = {}

    def place_of(self, task: Task[Any, Any]) -> Place:
        if task.pool is not None:
            return cast(Place, task.pool)
        if task.is_async and self.default != "processes":
            return "async"
        return self.default

    async def run(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  context: JobContext, timeout_s: float | None) -> Any:
        """The function's result (or :class:`Encoded`); raises what it raised,
        JobTimeoutError, or JobCancelledError."""
        place = self.place_of(task)
        if place == "processes":
            return await self._in_process(task, args, kwargs, context, timeout_s)
        token = _current.set(context)
        try:
            if place == "threads" and not task.is_async:
                return await self._in_thread(task, args, kwargs, context, timeout_s)
            return await self._on_loop(task, args, kwargs, context, timeout_s)
        finally:
            _current.reset(token)

    def cancel(self, context: JobContext) -> None:
        """Stop a running job as far as its place allows (see the module docstring)."""
        context.cancelled_event.set()
        found = self._coroutines.get(context.key)
        if found is not None:
            found.cancel()
        if self._processes is not None:
            self._processes.kill(context.key)

    async def _on_loop(self, task: Task[Any, Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any], context: JobContext,
                       timeout_s: float | None) -> Any:
        if not task.is_async:
            return task.fn(*args, **kwargs)
        # The coroutine runs in the worker's task for the job (no task of its own): a
        # cancel cancels that task, and the worker records the outcome all the same.
        self._coroutines[context.key] = asyncio.current_task()  # type: ignore[assignment]
        try:
            if timeout_s is None:
                return await task.fn(*args, **kwargs)
            async with asyncio.timeout(timeout_s):
                return await task.fn(*args, **kwargs)
        except TimeoutError:
            raise JobTimeoutError(f"job timed out after {timeout_s} s") from None
        except asyncio.CancelledError:
            if context.cancelled:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                raise JobCancelledError("cancelled") from None
            raise
        finally:
            del self._coroutines[context.key]

    async def _in_thread(self, task: Task[Any, Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any], context: JobContext,
                         timeout_s: float | None) -> Any:
        call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._threads, call)
        done, _ = await asyncio.wait({future}, timeout=timeout_s)
        if not done:
            # The thread can't be stopped: wait for it, holding the job, then fail.
            await asyncio.wait({future})
            raise JobTimeoutError(f"job timed out after {timeout_s} s (the thread ran on to "
                                  "its end; its result was dropped)")
        return future.result()

    async def _in_process(self, task: Task[Any, Any], args: tuple[Any, ...],
                          kwargs: dict[str, Any], context: JobContext,
                          timeout_s: float | None) -> Encoded:
        if self._processes is None:
            jobs, memory = self._child_limits
            self._processes = ProcessPool(self._size, self._report_from_child, jobs, memory)
        message = ("run", context.id, context.queue, context.name, context.attempts_made,
                   task.fn.__module__, task.name, args, kwargs, context.children_state)
        try:
            text = await self._processes.run(context.key, message, timeout_s)
        except TimeoutError:
            raise JobTimeoutError(f"job timed out after {timeout_s} s (child killed)") from None
        except asyncio.CancelledError:
            if context.cancelled:
                raise JobCancelledError("cancelled (child killed)") from None
            raise
        return Encoded(text)

    def _report_from_child(self, queue: str, job_id: str, kind: str, payload: str) -> None:
        self._report(queue, job_id, kind, payload)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.close()
