"""Tasks: decorated functions that can be called now or queued as jobs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskflow import _json, _portal
from taskflow.backends.base import NewJob
from taskflow.options import JobOptions

if TYPE_CHECKING:
    from taskflow.app import App
    from taskflow.job import Job

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function registered with an :class:`~taskflow.App`.

    Calling the task runs the function here and now; ``delay`` queues a job that
    a worker runs. Arguments are bound to the function's signature at the call,
    so a wrong call raises TypeError in the caller and nothing is queued.
    """

    def __init__(
        self, app: App, fn: Callable[P, R] | Callable[P, Awaitable[R]], name: str, queue: str,
        options: JobOptions,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.default_options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """A signature: this task with these arguments, to queue later or in bulk."""
        return Signature(self, self.encode_args(args, kwargs), self.default_options, self.queue)

    def options(self, *, queue: str | None = None, **options: Any) -> BoundTask[P, R]:
        """This task with per-call options: ``delay_s``, ``priority``, ``lifo``, ``job_id``,
        ``attempts``, ``backoff``, ``keep_completed``, ``keep_failed``, ``keep_logs``."""
        return BoundTask(self, self.default_options.merge(**options), queue or self.queue)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a job that runs this task with these arguments (from sync code)."""
        return self.s(*args, **kwargs).delay()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a job that runs this task with these arguments (from async code)."""
        return await self.s(*args, **kwargs).adelay()

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The job's data: a JSON object of parameter name to value."""
        bound = self.signature.bind(*args, **kwargs)
        return _json.dumps(bound.arguments, f"arguments of {self.name}")

    def decode_args(self, data: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for a call from a job's data."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError(f"job data for {self.name} must be a JSON object, got {data!r}")
        unknown = set(data) - set(self.signature.parameters)
        if unknown:
            raise TypeError(f"{self.name}() got unexpected argument(s): {sorted(unknown)}")
        bound = inspect.BoundArguments(self.signature, dict(data))
        self.signature.bind(*bound.args, **bound.kwargs)  # same TypeError as a direct call
        return bound.args, bound.kwargs


class BoundTask(Generic[P, R]):
    """A task with per-call options, from :meth:`Task.options`."""

    def __init__(self, task: Task[P, R], options: JobOptions, queue: str) -> None:
        self.task = task
        self.job_options = options
        self.queue = queue

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        data = self.task.encode_args(args, kwargs)
        return Signature(self.task, data, self.job_options, self.queue)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.s(*args, **kwargs).delay()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.s(*args, **kwargs).adelay()


@dataclass(frozen=True)
class Signature(Generic[R]):
    """A task, its encoded arguments and options: one job, not yet queued."""

    task: Task[Any, R]
    data: str
    options: JobOptions = field(default_factory=JobOptions)
    queue: str = ""

    def to_new_job(self) -> NewJob:
        opts = self.options
        return NewJob(
            name=self.task.name, data=self.data, opts=_json.dumps(opts.to_bullmq(), "options"),
            job_id=opts.job_id or "", delay_ms=opts.delay_ms, priority=opts.priority,
            lifo=opts.lifo,
        )

    def delay(self) -> Job[R]:
        """Queue this job (from sync code)."""
        return _portal.run(self.adelay())

    async def adelay(self) -> Job[R]:
        """Queue this job (from async code)."""
        jobs = await self.task.app.aadd_bulk([self])
        return jobs[0]
