"""The App: the registry of tasks and the broker they share."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from taskflow import _portal
from taskflow.backends.redis import RedisBroker, resolve_url
from taskflow.errors import ConfigurationError, UnknownTaskError
from taskflow.job import Job
from taskflow.keys import DEFAULT_PREFIX
from taskflow.options import JobOptions
from taskflow.queue import Queue
from taskflow.task import Signature, Task

if TYPE_CHECKING:
    from taskflow.schedule import Schedulers
    from taskflow.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
BULK_CHUNK = 1000


class App:
    """A taskflow application: tasks, their queues, and the broker.

    ``broker`` is a URL (``redis://``, ``rediss://``, ``unix://``); without one,
    ``$TASKFLOW_BROKER_URL``, else an embedded server started on first use.
    """

    def __init__(
        self, name: str = "taskflow", broker: str | None = None, *,
        prefix: str = DEFAULT_PREFIX, default_queue: str = DEFAULT_QUEUE,
    ) -> None:
        if not prefix or not default_queue or ":" in default_queue:
            raise ConfigurationError(
                "prefix and default_queue must be non-empty, the queue without ':'")
        self.name = name
        self.prefix = prefix
        self.default_queue = default_queue
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._url = broker
        self._resolved_url: str | None = None
        self._brokers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisBroker] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        if broker is not None:
            resolve_url(broker)  # a bad URL fails here, at the point of the mistake

    def __repr__(self) -> str:
        return f"<App {self.name} tasks={len(self.tasks)}>"

    # -- registry ---------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, queue: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Any = None, /, *, name: str | None = None, queue: str | None = None,
             **options: Any) -> Any:
        """Register a function (``def`` or ``async def``) as a task.

        Used bare (``@app.task``) or with options (``@app.task(queue="emails",
        attempts=3, backoff=("exponential", 1.0))``); the options are the defaults of
        every job of the task. The name defaults to ``module.qualname``. ``pool`` says
        where the function runs (``async``, ``threads`` or ``processes``), whatever the
        worker's pool.
        """
        pool = options.pop("pool", None)
        if pool is not None and pool not in ("async", "threads", "processes"):
            raise ConfigurationError(f"pool must be async, threads or processes: {pool!r}")
        job_options = JobOptions().merge(**options)

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            task_queue = queue or self.default_queue
            if ":" in task_queue or not task_queue:
                raise ConfigurationError(
                    f"queue names may not be empty or contain ':': {task_queue!r}")
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ConfigurationError(f"a different task is already named {task_name!r}")
            registered: Task[Any, Any] = Task(self, func, task_name, task_queue, job_options,
                                              pool)
            self.tasks[task_name] = registered
            return registered

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task[Any, Any]:
        """The task registered under ``name``; UnknownTaskError when there is none."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(f"no task named {name!r} in app {self.name!r}") from None

    @property
    def queues(self) -> list[str]:
        """Every queue some task of this app uses (the default queue first)."""
        names = {t.queue for t in self.tasks.values()} | {self.default_queue}
        return sorted(names, key=lambda q: (q != self.default_queue, q))

    # -- broker -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker URL in use (starting the embedded server when none was given)."""
        with self._lock:
            if self._resolved_url is None:
                self._resolved_url = resolve_url(self._url)
            return self._resolved_url

    async def aheal(self) -> None:
        """After broker trouble: start the embedded server again if this app uses it and
        it died (its data comes back from its AOF). Other servers are left alone."""
        url = self.url
        from taskflow.backends import embedded

        if url == embedded.url_of():
            await asyncio.to_thread(embedded.ensure_server)

    def broker(self) -> RedisBroker:
        """The broker for the running event loop (each loop has its own connections)."""
        loop = asyncio.get_running_loop()
        found = self._brokers.get(loop)
        if found is None:
            found = self._brokers[loop] = RedisBroker(self.url, self.prefix)
        return found

    async def aclose(self) -> None:
        """Close the running loop's broker connections."""
        found = self._brokers.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.close()

    def close(self) -> None:
        """Close the connections sync calls opened (a new call opens them again)."""
        loop = _portal.portal_loop()
        if loop in self._brokers:
            _portal.run(self.aclose())

    # -- jobs -------------------------------------------------------------------------

    async def aadd_bulk(self, signatures: Iterable[Signature[Any]]) -> list[Job[Any]]:
        """Queue many jobs, a few round trips for all (one script call per 1000 per queue)."""
        sigs = list(signatures)
        new_jobs = [sig.to_new_job() for sig in sigs]  # encode all before writing any
        by_queue: dict[str, list[int]] = defaultdict(list)
        for index, sig in enumerate(sigs):
            by_queue[sig.queue or sig.task.queue].append(index)
        broker = self.broker()
        jobs: list[Job[Any] | None] = [None] * len(sigs)
        for queue, indexes in by_queue.items():
            for start in range(0, len(indexes), BULK_CHUNK):
                chunk = indexes[start:start + BULK_CHUNK]
                added = await broker.add_jobs(queue, [new_jobs[i] for i in chunk])
                for i, (job_id, _) in zip(chunk, added, strict=True):
                    jobs[i] = Job(self, queue, job_id, sigs[i].task.name)
        return [job for job in jobs if job is not None]

    def add_bulk(self, signatures: Iterable[Signature[Any]]) -> list[Job[Any]]:
        """Like :meth:`aadd_bulk`, from sync code."""
        return _portal.run(self.aadd_bulk(signatures))

    def queue(self, name: str | None = None) -> Queue:
        """The management handle of a queue (the default queue when unnamed)."""
        return Queue(self, name or self.default_queue)

    def job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle on an existing job by id."""
        return Job(self, queue or self.default_queue, str(job_id))

    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Worker:
        """A worker for this app; see :class:`taskflow.Worker` for the options."""
        from taskflow.worker import Worker

        return Worker(self, queues, **options)

    def schedulers(self, queues: Sequence[str] | None = None) -> Schedulers:
        """The job schedulers of the app's queues (or of ``queues``): list, read, remove.
        Create them with :meth:`Task.schedule <taskflow.Task.schedule>`."""
        from taskflow.schedule import Schedulers

        return Schedulers(self, list(queues) if queues else self.queues)
