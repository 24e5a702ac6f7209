"""Tasks: decorated functions that can be called now or queued as jobs."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskflow import _json, _portal
from taskflow.backends.base import NewJob
from taskflow.errors import ConfigurationError
from taskflow.options import JobOptions

if TYPE_CHECKING:
    from typing import Unpack

    from taskflow.app import App
    from taskflow.job import Job
    from taskflow.schedule import ScheduleOptions, SchedulerInfo

P = ParamSpec("P")
R = TypeVar("R")

_FED = object()  # stands for the argument a flow feeds in at run time


@functools.lru_cache(maxsize=256)
def _stored_options(options: JobOptions) -> str:
    """The ``opts`` JSON of these options (jobs of one task mostly share them)."""
    return _json.dumps(options.to_bullmq(), "options")


class Task(Generic[P, R]):
    """A function registered with an :class:`~taskflow.App`.

    Calling the task runs the function here and now; ``delay`` queues a job that
    a worker runs. Arguments are bound to the function's signature at the call,
    so a wrong call raises TypeError in the caller and nothing is queued.
    """

    def __init__(
        self, app: App, fn: Callable[P, R] | Callable[P, Awaitable[R]], name: str, queue: str,
        options: JobOptions, pool: str | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.default_options = options
        self.pool: Any = pool  # where the function runs; None: as the worker says
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        params = self.signature.parameters.values()
        # Signatures of named parameters only decode by a set check (the common case).
        self._by_name = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self._names = frozenset(self.signature.parameters)
        self._required = frozenset(p.name for p in params if p.default is p.empty)
        self._positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """A signature: this task with these arguments, to queue later, in bulk, or as a
        node of a flow. ``children=[...]`` (a reserved keyword) makes it a parent that
        runs once its children are done; see :mod:`taskflow.flows`."""
        children: Any = kwargs.pop("children", None)
        sig = Signature(self, self.try_encode_args(args, kwargs), self.default_options,
                        self.queue, args, dict(kwargs))
        return sig.with_children(children) if children is not None else sig

    def options(self, *, queue: str | None = None, **options: Any) -> BoundTask[P, R]:
        """This task with per-call options: ``delay_s``, ``priority``, ``lifo``, ``job_id``,
        ``attempts``, ``backoff``, ``keep_completed``, ``keep_failed``, ``keep_logs``."""
        if queue is not None and (not queue or ":" in queue):
            raise ConfigurationError(f"queue names may not be empty or contain ':': {queue!r}")
        return BoundTask(self, self.default_options.merge(**options), queue or self.queue)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a job that runs this task with these arguments (from sync code)."""
        return self.s(*args, **kwargs).delay()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue a job that runs this task with these arguments (from async code)."""
        return await self.s(*args, **kwargs).adelay()

    def schedule(self, **options: Unpack[ScheduleOptions]) -> SchedulerInfo:
        """Create or update a job scheduler that runs this task on a cron pattern or at an
        interval: ``schedule(cron="0 6 * * MON", tz="Europe/Berlin", args=(42,))``,
        ``schedule(every=timedelta(minutes=5))``. The same id (by default derived from
        the task and its arguments) updates the same scheduler and never doubles it;
        see :class:`~taskflow.schedule.ScheduleOptions` for the options and
        :mod:`taskflow.schedule` for the rules. Bad options raise ConfigurationError
        and write nothing."""
        from taskflow.schedule import Plan, aupsert

        plan = Plan.make(self, options)
        return _portal.run(aupsert(self.app, plan))

    async def aschedule(self, **options: Unpack[ScheduleOptions]) -> SchedulerInfo:
        """Like :meth:`schedule`, from async code."""
        from taskflow.schedule import Plan, aupsert

        return await aupsert(self.app, Plan.make(self, options))

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The job's data: a JSON object of parameter name to value."""
        return _json.dumps(self._bind(args, kwargs), f"arguments of {self.name}")

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        # Named parameters only, given plainly: map them without inspect (the common
        # case, on the enqueue path); anything else gets inspect's binding and errors.
        if self._by_name and len(args) <= len(self._positional):
            arguments = dict(zip(self._positional, args, strict=False))
            if (not arguments.keys() & kwargs.keys() and kwargs.keys() <= self._names
                    and self._required <= arguments.keys() | kwargs.keys()):
                arguments.update(kwargs)
                return arguments
        return dict(self.signature.bind(*args, **kwargs).arguments)

    def try_encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Like :meth:`encode_args`, but None when the arguments don't fit (yet): a chain
        step's first argument comes later. Queuing it unfed raises the TypeError."""
        try:
            return self.encode_args(args, kwargs)
        except TypeError:
            return None

    def encode_fed_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The data of a step whose first parameter the flow fills in at run time."""
        first = self.first_parameter
        bound = self.signature.bind(_FED, *args, **kwargs)
        arguments = {k: v for k, v in bound.arguments.items() if k != first}
        return _json.dumps(arguments, f"arguments of {self.name}")

    @property
    def first_parameter(self) -> str:
        """The name of the parameter a flow feeds (a chain's previous result)."""
        for param in self.signature.parameters.values():
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                return param.name
        raise TypeError(f"{self.name} takes no positional parameter to receive results")

    def decode_args(self, data: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for a call from a job's data."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError(f"job data for {self.name} must be a JSON object, got {data!r}")
        unknown = data.keys() - self._names
        if unknown:
            raise TypeError(f"{self.name}() got unexpected argument(s): {sorted(unknown)}")
        if self._by_name and self._required <= data.keys():
            return (), data
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
        children: Any = kwargs.pop("children", None)
        data = self.task.try_encode_args(args, kwargs)
        sig = Signature(self.task, data, self.job_options, self.queue, args, dict(kwargs))
        return sig.with_children(children) if children is not None else sig

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.s(*args, **kwargs).delay()

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.s(*args, **kwargs).adelay()


@dataclass(frozen=True, eq=False)
class Signature(Generic[R]):
    """A task, its arguments and options: one job, not yet queued.

    With ``children`` it is the root of a flow: a tree of jobs added at once, where each
    parent runs after its children. ``feed`` names what a flow passes to the task's
    first parameter: ``previous`` (a chain step: its one child's result) or ``results``
    (a chord callback: every child's result, in order).
    """

    task: Task[Any, R]
    data: str | None
    options: JobOptions = field(default_factory=JobOptions)
    queue: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    children: tuple[Signature[Any], ...] = ()
    feed: str = ""

    def with_children(self, children: Iterable[Signature[Any]]) -> Signature[R]:
        """This signature as the parent of ``children``."""
        return replace(self, children=tuple(children))

    def fed(self, feed: str) -> Signature[R]:
        """This signature with its first parameter left for the flow to fill."""
        data = self.task.encode_fed_args(self.args, self.kwargs)
        return replace(self, data=data, feed=feed)

    def to_new_job(self, extra_opts: dict[str, Any] | None = None) -> NewJob:
        data = self.data
        if data is None:  # arguments that never fitted: raise the binding's TypeError
            data = self.task.encode_args(self.args, self.kwargs)
        opts = self.options
        if extra_opts:
            opts_json = _json.dumps({**opts.to_bullmq(), **extra_opts}, "options")
        else:
            opts_json = _stored_options(opts)
        return NewJob(
            name=self.task.name, data=data, opts=opts_json,
            job_id=opts.job_id or "", delay_ms=opts.delay_ms, priority=opts.priority,
            lifo=opts.lifo,
        )

    def delay(self) -> Job[R]:
        """Queue this job, or this whole flow (from sync code)."""
        return _portal.run(self.adelay())

    async def adelay(self) -> Job[R]:
        """Queue this job, or this whole flow (from async code)."""
        if self.children:
            from taskflow.flows import aadd_flow

            return await aadd_flow(self)
        jobs = await self.task.app.aadd_bulk([self])
        return jobs[0]
