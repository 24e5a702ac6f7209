"""Job handles: what a caller holds after queuing, and what a running task sees of itself."""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskflow import _json, _portal
from taskflow.errors import JobFailedError, JobNotFoundError, ResultTimeoutError

if TYPE_CHECKING:
    from taskflow.app import App
    from taskflow.backends.redis import RedisBroker

R = TypeVar("R")

# How far back in the events stream to look for the end of a job that is gone.
EVENTS_LOOKBACK = 10000
BLOCK_SLICE_MS = 5000


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job, read in one round trip."""

    id: str
    queue: str
    name: str
    state: str
    data: Any
    opts: dict[str, Any]
    attempts_made: int
    attempts_started: int
    progress: Any
    result: Any
    failed_reason: str | None
    stacktrace: list[str]
    timestamp_ms: int | None
    processed_on_ms: int | None
    finished_on_ms: int | None

    @property
    def traceback(self) -> str | None:
        """The traceback of the last failed attempt."""
        return self.stacktrace[-1] if self.stacktrace else None

    @classmethod
    def from_fields(cls, job_id: str, queue: str, state: str, f: dict[str, str]) -> JobInfo:
        return cls(
            id=job_id, queue=queue, name=f.get("name", ""), state=state,
            data=_json.loads(f.get("data")), opts=_json.loads(f.get("opts")) or {},
            attempts_made=int(f.get("atm") or 0), attempts_started=int(f.get("ats") or 0),
            progress=_json.loads(f.get("progress")), result=_json.loads(f.get("returnvalue")),
            failed_reason=f.get("failedReason"),
            stacktrace=_json.loads(f.get("stacktrace")) or [],
            timestamp_ms=_int_or_none(f.get("timestamp")),
            processed_on_ms=_int_or_none(f.get("processedOn")),
            finished_on_ms=_int_or_none(f.get("finishedOn")),
        )


@dataclass
class JobTree:
    """A job and its children, as read back by :meth:`Job.atree`."""

    job: Job[Any]
    state: str
    children: list[JobTree]
    more_children: int = 0


def _int_or_none(text: str | None) -> int | None:
    return int(float(text)) if text else None


class Job(Generic[R]):
    """A queued job: its id and queue, and ways to read its state and result."""

    def __init__(self, app: App, queue: str, job_id: str, name: str = "") -> None:
        self.app = app
        self.queue = queue
        self.id = job_id
        self.name = name
        self.children: list[Job[Any]] = []

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} queue={self.queue!r}>"

    @property
    def key(self) -> str:
        """The job's hash key on Redis (how a parent names its children)."""
        return f"{self.app.prefix}:{self.queue}:{self.id}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.queue, other.id) == (self.queue, self.id)

    def __hash__(self) -> int:
        return hash((self.queue, self.id))

    # -- async ------------------------------------------------------------------------

    async def astate(self) -> str:
        """waiting, delayed, active, completed, failed, waiting-children or unknown."""
        return await self.app.broker().job_state(self.queue, self.id)

    async def ainfo(self) -> JobInfo:
        """A snapshot of the job; JobNotFoundError when it is gone."""
        broker = self.app.broker()
        fields = await broker.get_job(self.queue, self.id)
        if fields is None:
            raise JobNotFoundError(f"no job {self.id} in queue {self.queue!r}")
        state = await broker.job_state(self.queue, self.id)
        return JobInfo.from_fields(self.id, self.queue, state, fields)

    async def atree(self, depth: int = 10, max_children: int = 100) -> JobTree:
        """This job and its children down to ``depth`` levels, at most ``max_children``
        per node, each with its state."""
        broker = self.app.broker()
        state = await broker.job_state(self.queue, self.id)
        tree = JobTree(self, state, [])
        if depth <= 0:
            return tree
        keys = await broker.child_keys(self.queue, self.id)
        tree.more_children = max(0, len(keys) - max_children)
        for key in keys[:max_children]:
            queue, job_id = key.rsplit(":", 2)[1:]
            child: Job[Any] = Job(self.app, queue, job_id)
            tree.children.append(await child.atree(depth - 1, max_children))
        return tree

    def tree(self, depth: int = 10, max_children: int = 100) -> JobTree:
        """Like :meth:`atree`, from sync code."""
        return _portal.run(self.atree(depth, max_children))

    async def acancel(self) -> str:
        """Cancel this job; see :meth:`taskflow.Queue.acancel`."""
        return await self.app.queue(self.queue).acancel(self.id)

    def cancel(self) -> str:
        """Like :meth:`acancel`, from sync code."""
        return _portal.run(self.acancel())

    async def alogs(self) -> list[str]:
        """The lines the task logged for this job."""
        return await self.app.broker().get_logs(self.queue, self.id)

    async def aresult(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its result; raise JobFailedError
        when it failed and ResultTimeoutError when ``timeout`` seconds pass first."""
        broker = self.app.broker()
        stream = broker.keys(self.queue).key("events")
        last_id = await broker.last_event_id(self.queue)
        ended = await self._ended_now(broker)
        deadline = None if timeout is None else time.monotonic() + timeout
        while ended is None:
            block_ms = _block_ms(deadline)
            if block_ms is None:
                raise ResultTimeoutError(f"job {self.id} did not finish within {timeout} s")
            for _, entries in await broker.read_events({stream: last_id}, block_ms):
                for entry_id, fields in entries:
                    last_id = entry_id
                    ended = ended or self._ending_in(fields)
        kind, fields = ended
        if kind == "failed" and "stacktrace" not in fields:
            fields = await broker.get_job(self.queue, self.id) or fields
        return self._outcome(kind, fields)

    async def _ended_now(self, broker: RedisBroker) -> tuple[str, dict[str, str]] | None:
        fields = await broker.get_job(self.queue, self.id)
        if fields is None:
            return await self._ended_in_history(broker)
        if "finishedOn" not in fields:
            return None
        kind = "failed" if "failedReason" in fields and "returnvalue" not in fields else "completed"
        return kind, fields

    async def _ended_in_history(self, broker: RedisBroker) -> tuple[str, dict[str, str]]:
        # Jobs kept for no time vanish when they end; their end is still in the stream.
        stream = broker.keys(self.queue).key("events")
        rows = await broker.call(
            "reading events", lambda: broker.client.xrevrange(stream, count=EVENTS_LOOKBACK)
        )
        for _, fields in rows:
            ended = self._ending_in(fields)
            if ended is not None:
                return ended
        raise JobNotFoundError(f"no job {self.id} in queue {self.queue!r}")

    def _ending_in(self, fields: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        if fields.get("jobId") != self.id:
            return None
        if fields.get("event") == "removed":
            raise JobNotFoundError(f"job {self.id} in {self.queue!r} was removed (or cancelled "
                                   "before it ran)")
        if fields.get("event") not in ("completed", "failed"):
            return None
        return fields["event"], fields

    def _outcome(self, kind: str, fields: dict[str, str]) -> R:
        if kind == "completed":
            return _json.loads(fields.get("returnvalue"))  # type: ignore[no-any-return]
        trace = _json.loads(fields.get("stacktrace")) or []
        reason = fields.get("failedReason", "")
        raise JobFailedError(self.id, reason, trace[-1] if trace else None)

    # -- sync -------------------------------------------------------------------------

    def state(self) -> str:
        """Like :meth:`astate`, from sync code."""
        return _portal.run(self.astate())

    def info(self) -> JobInfo:
        """Like :meth:`ainfo`, from sync code."""
        return _portal.run(self.ainfo())

    def logs(self) -> list[str]:
        """Like :meth:`alogs`, from sync code."""
        return _portal.run(self.alogs())

    def result(self, timeout: float | None = None) -> R:
        """Like :meth:`aresult`, from sync code."""
        return _portal.run(self.aresult(timeout))


def _block_ms(deadline: float | None) -> int | None:
    if deadline is None:
        return BLOCK_SLICE_MS
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    return max(1, min(BLOCK_SLICE_MS, int(left * 1000)))


class JobContext:
    """What a running task knows of its own job: :func:`current_job` returns it."""

    def __init__(self, job_id: str, queue: str, name: str, attempts_made: int,
                 runtime: Any) -> None:
        self.id = job_id
        self.queue = queue
        self.name = name
        self.attempts_made = attempts_made
        self._runtime = runtime
        self._children: tuple[list[str], dict[str, Any], dict[str, str]] | None = None
        self._cancelled: threading.Event | None = None  # made on first use: most never are

    @property
    def cancelled_event(self) -> threading.Event:
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled

    @property
    def key(self) -> str:
        """Names the job among all queues: ``<queue>/<id>``."""
        return f"{self.queue}/{self.id}"

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled: a long task in a thread should check it and
        return early (a coroutine or a child process is stopped for it)."""
        return self._cancelled is not None and self._cancelled.is_set()

    def progress(self, value: Any) -> None:
        """Report progress (any JSON value, often a percentage); listeners get an event."""
        self._runtime.report(self, "progress", _json.dumps(value, "progress"))

    def log(self, line: str) -> None:
        """Append a line to the job's log."""
        self._runtime.report(self, "log", str(line))

    def update_data(self, **changes: Any) -> None:
        """Store new values of the job's arguments, for its next run (step jobs)."""
        self._runtime.update_data(self, changes)

    def add_children(self, signatures: list[Any]) -> list[Job[Any]]:
        """Add jobs (or trees) as children of this running job; raise
        :class:`taskflow.control.WaitForChildren` to run again when they are done.
        From a thread; in a coroutine, use :meth:`aadd_children`."""
        return self._runtime.add_children(self, signatures)  # type: ignore[no-any-return]

    async def aadd_children(self, signatures: list[Any]) -> list[Job[Any]]:
        """Like :meth:`add_children`, in a coroutine."""
        return await self._runtime.aadd_children(self, signatures)  # type: ignore[no-any-return]

    def set_children(self, order: list[str], processed: dict[str, Any],
                     failed: dict[str, str]) -> None:
        self._children = (order, processed, failed)

    @property
    def children_state(self) -> tuple[list[str], dict[str, Any], dict[str, str]] | None:
        """What :meth:`set_children` stored (sent along to a child process)."""
        return self._children

    def _require_children(self) -> tuple[list[str], dict[str, Any], dict[str, str]]:
        if self._children is None:
            load = getattr(self._runtime, "load_children", None)
            if load is None or not load(self) or self._children is None:
                raise LookupError(f"job {self.id} is not the parent of a flow")
        return self._children

    def children_results(self) -> dict[str, Any]:
        """Results of the children that completed, by child job key."""
        return dict(self._require_children()[1])

    def results(self) -> list[Any]:
        """Children's results in the order the children were given (None for a child that
        failed under the ``ignore`` or ``continue`` policy, or was removed)."""
        order, processed, _ = self._require_children()
        return [processed.get(key) for key in order]

    def failed_children(self) -> dict[str, str]:
        """Failure reasons of children that failed without failing this parent."""
        return dict(self._require_children()[2])


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("taskflow_job")


def current_job() -> JobContext:
    """The job being run by the calling task; LookupError outside a task run by a worker."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a task run by a worker") from None
