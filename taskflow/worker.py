"""The worker: takes jobs from its queues, runs their tasks, records the outcomes.

One driver per queue makes one script call per round: it records the outcomes of
the jobs that finished since the last round and takes as many ready jobs as there
are free slots. When nothing is ready, it blocks on the queue's marker; no polling.
Locks of running jobs are renewed in one call per queue and interval, from a thread
with its own connection, whatever the jobs are doing; the stalled check returns the
jobs of dead workers to their queue. Where each function runs (loop, threads, child
processes) is :mod:`taskflow.executors`' business.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from taskflow import _json
from taskflow.backends.base import Outcome
from taskflow.backends.redis import LockRenewer, RedisBroker, SyncReader
from taskflow.control import ControlSignal, MoveToDelayed
from taskflow.errors import (
    ConfigurationError,
    EncodeError,
    JobCancelledError,
    TaskflowError,
    UnknownTaskError,
    UnrecoverableError,
)
from taskflow.executors import PLACES, Encoded, Executors
from taskflow.job import JobContext
from taskflow.options import (
    DEFAULT_KEEP_COMPLETED,
    DEFAULT_KEEP_FAILED,
    POLICY_FLAGS,
    Backoff,
    JobOptions,
    Keep,
)
from taskflow.pool import ChildFailure

if TYPE_CHECKING:
    from taskflow.app import App
    from taskflow.task import Task

logger = logging.getLogger(__name__)

Pool = Literal["threads", "async", "processes"]
EVENTS = ("active", "completed", "failed", "stalled", "error")
STACKTRACE_LIMIT = 10
IDLE_BLOCK_S = 10.0
ROUNDS_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class _Policy:
    """What the worker needs of a job's options, parsed once per distinct opts text."""

    attempts: int
    backoff: Backoff | None
    keep_completed: tuple[int, float]
    keep_failed: tuple[int, float]
    keep_logs: int
    parent_policy: str
    timeout_s: float | None

    @classmethod
    @functools.lru_cache(maxsize=256)
    def of(cls, opts_text: str, keep_completed: Keep, keep_failed: Keep) -> _Policy:
        """The policy of a job's stored options; ``keep_*`` apply where they say nothing."""
        raw = _json.loads(opts_text) or {}
        opts = JobOptions.from_bullmq(raw)
        # A child added by BullMQ with no policy flag leaves its parent waiting.
        flagged = any(raw.get(flag) for flag in POLICY_FLAGS.values())
        return cls(opts.attempts, opts.backoff,
                   (opts.keep_completed or keep_completed).script_args(),
                   (opts.keep_failed or keep_failed).script_args(), opts.keep_logs or 0,
                   opts.on_failure if flagged else "none", opts.timeout_s)


class _Running:
    """One job being run by this worker."""

    __slots__ = ("context", "fields", "policy", "queue", "started")

    def __init__(self, queue: str, context: JobContext, fields: dict[str, str],
                 keep: tuple[Keep, Keep]) -> None:
        self.queue = queue
        self.context = context
        self.fields = fields
        self.policy = _Policy.of(fields.get("opts") or "{}", *keep)
        self.started = time.perf_counter()


class Worker:
    """Runs the tasks of an app from one or more queues.

    concurrency: jobs run at once by this worker (all queues together).
    pool: where plain functions run: ``threads`` (a thread pool; coroutines run on
        the loop), ``async`` (on the loop too: only for functions that never block) or
        ``processes`` (child processes, coroutines included; see taskflow.executors).
        A task's own ``pool`` option wins.
    max_jobs_per_child / max_memory_mb: recycle a child process after that many jobs,
        or once it uses more memory than that.
    lock_ms: how long a job's lock lives without renewal; renewed every half of it.
    stalled_interval_ms / max_stalled: how often the stalled check runs, and how many
        times a job may stall before it fails.
    grace_s: how long a graceful stop waits for running jobs.
    metrics_points: per-minute completed/failed counts kept in Redis (0 = none).
    keep_completed / keep_failed: finished jobs kept when a job's options don't say
        (as BullMQ workers' removeOnComplete / removeOnFail): by default the last 1000
        completed for a day and the last 10000 failed for a week.
    """

    def __init__(
        self, app: App, queues: Sequence[str] | None = None, *, concurrency: int = 10,
        pool: Pool = "threads", lock_ms: int = 30_000, stalled_interval_ms: int = 30_000,
        max_stalled: int = 1, grace_s: float = 30.0, name: str | None = None,
        metrics_points: int = 1440, max_jobs_per_child: int | None = None,
        max_memory_mb: float | None = None, keep_completed: object = DEFAULT_KEEP_COMPLETED,
        keep_failed: object = DEFAULT_KEEP_FAILED,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1: {concurrency!r}")
        if pool not in PLACES:
            raise ConfigurationError(f"pool must be one of {PLACES}: {pool!r}")
        if lock_ms < 10 or stalled_interval_ms < 10 or max_stalled < 0 or grace_s < 0:
            raise ConfigurationError("lock_ms, stalled_interval_ms, max_stalled, grace_s too small")
        self.app = app
        self.queues = list(queues or app.queues)
        for queue in self.queues:
            if not queue or ":" in queue:
                raise ConfigurationError(f"queue names may not be empty or contain ':': "
                                         f"{queue!r}")
        for limit in (max_jobs_per_child, max_memory_mb):
            if limit is not None and limit <= 0:
                raise ConfigurationError("max_jobs_per_child and max_memory_mb must be > 0")
        self.concurrency = concurrency
        self.pool = pool
        self.lock_ms = lock_ms
        self.stalled_interval_ms = stalled_interval_ms
        self.max_stalled = max_stalled
        self.grace_s = grace_s
        self.metrics_points = max(0, metrics_points)
        self.child_limits = (max_jobs_per_child, max_memory_mb)
        self.keep = (Keep.parse(keep_completed), Keep.parse(keep_failed))
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.token = uuid.uuid4().hex
        self._listeners: dict[str, list[Callable[..., Any]]] = defaultdict(list)
        self._running: dict[tuple[str, str], _Running] = {}
        self._job_tasks: set[asyncio.Task[None]] = set()
        self.abandoned = 0
        self._outcomes: dict[str, list[tuple[_Running, Outcome, Any]]] = defaultdict(list)
        self._wake: dict[str, asyncio.Event] = {}
        self._ready: dict[str, bool] = {}
        self._in_flight: dict[str, int] = {}
        self._probing: set[str] = set()  # queues woken from idle, not yet looked at
        self._reserved = 0  # slots asked for by rounds in flight
        # Each round takes at most its share of the slots, so that while Redis runs one
        # round, Python runs the jobs the other brought: both cores stay busy.
        self._batch = max(1, -(-concurrency // ROUNDS_IN_FLIGHT))
        self._next_due_ms: dict[str, int] = {}
        self._stopping = False
        self._paused = False
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executors: Executors | None = None
        self._reader: SyncReader | None = None
        self._broker: RedisBroker | None = None

    # -- public -----------------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> None:
        """Call ``callback`` on a worker event: ``active(job)``, ``completed(job, result)``,
        ``failed(job, error)`` (each failed attempt), ``stalled(job_id)``, ``error(exc)``."""
        if event not in EVENTS:
            raise ConfigurationError(f"unknown worker event {event!r}; known: {EVENTS}")
        self._listeners[event].append(callback)

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    def stop(self) -> None:
        """Stop taking jobs; :meth:`run` returns once running jobs end (within grace_s)."""
        self._stopping = True
        self._wake_all()

    def pause(self) -> None:
        """Stop taking jobs (this worker only); running jobs go on. See :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Take jobs again after :meth:`pause`."""
        self._paused = False
        for queue in self._ready:
            self._ready[queue] = True
        self._wake_all()

    @property
    def paused(self) -> bool:
        return self._paused

    async def run(self) -> None:
        """Run until :meth:`stop`; then finish running jobs within the grace period."""
        self._loop = asyncio.get_running_loop()
        # Connections of its own: several workers may share an app (and a loop), and each
        # closes what it opened when it stops.
        self._broker = RedisBroker(self.app.url, self.app.prefix)
        self._reader = SyncReader(self.app.url, self.app.prefix)
        self._executors = Executors(self.pool, self.concurrency, self._report_from_child,
                                    *self.child_limits)
        self._stopped = asyncio.Event()
        renewer = LockRenewer(self.app.url, self.app.prefix, self.token, self.lock_ms,
                              self._running_ids, self._lock_lost)
        logger.info("worker %s started: queues %s, concurrency %d, pool %s",
                    self.name, ",".join(self.queues), self.concurrency, self.pool)
        renewer.start()
        housekeeping = [asyncio.create_task(self._check_stalled()),
                        asyncio.create_task(self._listen_for_cancels())]
        try:
            await asyncio.gather(*(self._drive(q) for q in self.queues))
        finally:
            for task in housekeeping:
                task.cancel()
            renewer.stop()
            self.abandoned = len(self._running)
            for task in list(self._job_tasks):
                task.cancel()  # coroutines past the grace period; their jobs stall back
            self._executors.close()
            self._reader.close()
            await self._broker.close()
            await self.app.aclose()  # what tasks opened through the app on this loop
            self._stopped.set()
            logger.info("worker %s stopped", self.name)

    def run_forever(self, install_signals: bool = True) -> None:
        """Run in a new event loop until SIGTERM/SIGINT (a second signal exits at once).

        Jobs still running in threads when the grace period ends can't be stopped, and
        Python would wait for them at exit: the process exits at once instead, and the
        stalled check gives those jobs to another worker.
        """
        asyncio.run(self._run_with_signals(install_signals))
        if self.abandoned:
            logger.warning("exiting with %d job(s) unfinished", self.abandoned)
            logging.shutdown()
            os._exit(0)

    async def _run_with_signals(self, install_signals: bool) -> None:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        await self.run()

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            logger.warning("second %s: exiting now", signal.Signals(sig).name)
            os._exit(128 + sig)
        logger.info("%s: stopping after running jobs (up to %.0f s)",
                    signal.Signals(sig).name, self.grace_s)
        self.stop()

    # -- the driver of one queue ------------------------------------------------------

    async def _drive(self, queue: str) -> None:
        self._wake[queue] = asyncio.Event()
        self._ready[queue] = True
        self._in_flight[queue] = 0
        marker: asyncio.Task[bool] | None = None
        grace_end: float | None = None
        try:
            while True:
                if self._stopping and grace_end is None:
                    grace_end = time.monotonic() + self.grace_s
                if self._stopping and self._drained(queue):
                    return
                if grace_end is not None and time.monotonic() > grace_end:
                    logger.warning("grace period over: %d job(s) left to the stalled check",
                                   len(self._running_in(queue)))
                    return
                taking = not (self._stopping or self._paused)
                fetch = min(self._free_slots(), self._batch) if taking else 0
                has_work = self._outcomes[queue] or (fetch > 0 and self._ready[queue])
                if has_work and self._in_flight[queue] < ROUNDS_IN_FLIGHT:
                    self._launch_round(queue, fetch)
                    continue
                can_take = fetch > 0 and not self._in_flight[queue]
                marker = await self._idle(queue, can_take, marker, grace_end)
        finally:
            if marker is not None:
                marker.cancel()  # and let it end before the connections close
                await asyncio.gather(marker, return_exceptions=True)

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    def _free_slots(self) -> int:
        return self.concurrency - len(self._running) - self._reserved

    def _drained(self, queue: str) -> bool:
        return not (self._outcomes[queue] or self._running_in(queue) or self._in_flight[queue])

    def _launch_round(self, queue: str, fetch: int) -> None:
        """Start a round without waiting for it: with two in flight, Python prepares the
        next while Redis runs the last, and both cores work."""
        done, self._outcomes[queue] = self._outcomes[queue], []
        self._reserved += fetch
        self._in_flight[queue] += 1
        if fetch and queue in self._probing:
            # Woken from idle: one round looks; a second follows only if jobs are there.
            self._probing.discard(queue)
            self._ready[queue] = False
        self._spawn(self._round(queue, fetch, done))

    async def _round(self, queue: str, fetch: int,
                     done: list[tuple[_Running, Outcome, Any]]) -> None:
        broker = self._require_broker()
        try:
            taken = await broker.finish_fetch(queue, self.token, self.lock_ms, fetch, self.name,
                                              [outcome for _, outcome, _ in done],
                                              self.metrics_points)
        except TaskflowError as exc:
            self._outcomes[queue] = done + self._outcomes[queue]
            await self._broker_trouble(exc)
            return
        finally:
            self._reserved -= fetch
            self._in_flight[queue] -= 1
            self._wake_all()  # slots it reserved may be free for other queues now
        self._settled(done, taken.statuses)
        for job_id, fields in taken.jobs:
            self._start(queue, job_id, fields)
        if fetch > 0 and len(taken.jobs) < fetch:
            self._ready[queue] = False
            self._next_due_ms[queue] = taken.next_delayed_ms
        elif taken.jobs:
            self._ready[queue] = True

    async def _idle(self, queue: str, can_take: bool, marker: asyncio.Task[bool] | None,
                    grace_end: float | None) -> asyncio.Task[bool] | None:
        """Wait for a job of this queue to finish, or (with a free slot) for the marker."""
        wake = self._wake[queue]
        wake.clear()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait())]
        if can_take and marker is None:
            marker = asyncio.create_task(self._wait_marker(queue))
        if can_take and marker is not None:
            waiters.append(marker)
        timeout = None if grace_end is None else max(0.0, grace_end - time.monotonic())
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        if marker is not None and marker.done():
            self._ready[queue] = True
            self._probing.add(queue)
            marker = None
        return marker

    async def _wait_marker(self, queue: str) -> bool:
        due = self._next_due_ms.get(queue, 0)
        timeout = IDLE_BLOCK_S
        if due:
            timeout = min(timeout, max(0.0, due / 1000.0 - time.time()) + 0.005)
        try:
            return await self._require_broker().wait_for_marker(queue, timeout, self.name)
        except TaskflowError as exc:
            await self._broker_trouble(exc)
            return False

    async def _broker_trouble(self, exc: TaskflowError) -> None:
        logger.error("broker error: %s; retrying in 1 s", exc)
        self._emit("error", exc)
        await asyncio.sleep(1.0)
        try:
            await self.app.aheal()
        except TaskflowError as heal_exc:
            logger.error("could not start the embedded server again: %s", heal_exc)

    def _running_in(self, queue: str) -> list[_Running]:
        return [r for (q, _), r in self._running.items() if q == queue]

    def _require_broker(self) -> RedisBroker:
        assert self._broker is not None, "the worker is not running"
        return self._broker

    # -- running one job --------------------------------------------------------------

    def _start(self, queue: str, job_id: str, fields: dict[str, str]) -> None:
        if (queue, job_id) in self._running:
            # Our lock lapsed and the stalled check gave the job back to us while we still
            # run it: the attempt in progress records the outcome (the lock is ours again).
            logger.warning("job %s in %s came back while still running here", job_id, queue)
            return
        attempts_made = int(fields.get("atm") or 0)
        context = JobContext(job_id, queue, fields.get("name", ""), attempts_made, self)
        running = _Running(queue, context, fields, self.keep)
        self._running[(queue, job_id)] = running
        self._emit("active", context)
        if fields.get("rjk"):  # made by a job scheduler: give it its next run first
            self._spawn(self._follow_scheduler(running))
            return
        self._spawn(self._execute(running))

    async def _execute(self, running: _Running) -> None:
        try:
            result = await self._call(running)
            if running.context.cancelled:
                raise JobCancelledError("cancelled")
            if isinstance(result, Encoded):
                value, result = result.text, _json.loads(result.text)
            else:
                value = _json.dumps(result, f"result of {running.context.name}")
            outcome = self._completed(running, value)
        except ControlSignal as signal_:
            outcome, result = self._steered(running, signal_), None
        except (Exception, asyncio.CancelledError, SystemExit, KeyboardInterrupt) as exc:
            # A task's sys.exit() or KeyboardInterrupt fails its job, not the worker.
            outcome, result = self._failed(running, exc), exc
        queue = running.queue
        self._outcomes[queue].append((running, outcome, result))
        del self._running[(queue, running.context.id)]
        self._wake_all()

    async def _call(self, running: _Running) -> Any:
        deferred = running.fields.get("defa")
        if deferred:  # BullMQ's stalled check decided this job fails when next taken
            raise _DeferredFailure(deferred)
        task = self.app.get_task(running.context.name)
        data = _json.loads(running.fields.get("data"))
        if "tfc" in running.fields:
            data = await self._feed_children(running, task, data)
        try:
            args, kwargs = task.decode_args(data)
        except (TypeError, ValueError) as exc:
            raise UnrecoverableError(f"bad arguments for {task.name}: {exc}") from exc
        return await self._require_executors().run(
            task, args, kwargs, running.context, running.policy.timeout_s)

    async def _feed_children(self, running: _Running, task: Task[Any, Any], data: Any) -> Any:
        """Load a flow parent's children outcomes; feed them to a chain step or chord."""
        ctx = running.context
        processed, failed = await self._require_broker().children_of(ctx.queue, ctx.id)
        _set_children(ctx, _json.loads(running.fields["tfc"]) or [], processed, failed)
        feed = (_json.loads(running.fields.get("opts")) or {}).get("tff")
        if feed in ("previous", "results") and isinstance(data, dict):
            results = ctx.results()
            data[task.first_parameter] = results if feed == "results" else results[0]
        return data

    def _completed(self, running: _Running, value: str) -> Outcome:
        count, age = running.policy.keep_completed
        return Outcome(running.context.id, "completed", value, running.context.attempts_made + 1,
                       keep_count=count, keep_age_s=age,
                       parent_key=running.fields.get("parentKey", ""))

    def _failed(self, running: _Running, exc: BaseException) -> Outcome:
        policy = running.policy
        made = running.context.attempts_made + 1
        reason = _reason(exc)
        stacktrace = self._stacktrace(running, exc)
        count, age = policy.keep_failed
        parent_key = running.fields.get("parentKey", "")
        if _is_final(exc) or made >= policy.attempts:
            kind = "failed" if _is_final(exc) else "exhausted"
            return Outcome(running.context.id, kind, reason, made, stacktrace,
                           keep_count=count, keep_age_s=age, parent_key=parent_key,
                           parent_policy=policy.parent_policy)
        delay = policy.backoff.wait_ms(made) if policy.backoff else 0
        return Outcome(running.context.id, "retry", reason, made, stacktrace, delay)

    def _steered(self, running: _Running, signal_: ControlSignal) -> Outcome:
        """A step job moving itself: no attempt counted (see taskflow.control)."""
        made = running.context.attempts_made
        if isinstance(signal_, MoveToDelayed):
            return Outcome(running.context.id, "delay", "", made,
                           retry_delay_ms=round(signal_.delay_s * 1000))
        return Outcome(running.context.id, "children", "", made)

    def _stacktrace(self, running: _Running, exc: BaseException) -> str:
        earlier = _json.loads(running.fields.get("stacktrace")) or []
        if isinstance(exc, ChildFailure):
            text = exc.traceback_text
        else:
            try:
                text = "".join(traceback.format_exception(exc))
            except Exception:
                text = f"{type(exc).__name__} (its traceback could not be formatted)"
        return _json.dumps([*earlier, text][-STACKTRACE_LIMIT:])

    def _settled(self, done: list[tuple[_Running, Outcome, Any]], statuses: list[int]) -> None:
        for (running, outcome, result), status in zip(done, statuses, strict=True):
            ctx = running.context
            elapsed = time.perf_counter() - running.started
            if status != 1:
                logger.warning("%6.2fs ! %s:%s outcome dropped: the lock was lost",
                               elapsed, ctx.id, ctx.name)
                continue
            if outcome.kind in ("delay", "children"):
                logger.info("%6.2fs > %s:%s moved to %s", elapsed, ctx.id, ctx.name,
                            "delayed" if outcome.kind == "delay" else "waiting-children")
                continue
            if outcome.kind == "completed":
                logger.info("%6.2fs <- %s:%s completed", elapsed, ctx.id, ctx.name)
                self._emit("completed", ctx, result)
                continue
            logger.info("%6.2fs x %s:%s %s: %s", elapsed, ctx.id, ctx.name,
                        "retrying" if outcome.kind == "retry" else "failed", outcome.value)
            self._emit("failed", ctx, result)

    # -- jobs made by a job scheduler (taskflow.schedule) ------------------------------

    async def _follow_scheduler(self, running: _Running) -> None:
        # As BullMQ does on taking the job: the scheduler moves on before this run
        # starts, and the job stays in _running meanwhile, so a stop waits for both.
        from taskflow.schedule import follow

        await follow(self._require_broker(), running.queue, running.fields["rjk"],
                     running.context.id)
        await self._execute(running)

    # -- reports from running tasks ---------------------------------------------------

    def report(self, context: JobContext, kind: str, payload: str) -> None:
        """Send a progress value or a log line of a running job (from any thread)."""
        self._call_on_loop(self._send_report(context, kind, payload))

    async def _send_report(self, context: JobContext, kind: str, payload: str) -> None:
        broker = self._require_broker()
        try:
            if kind == "progress":
                await broker.set_progress(context.queue, context.id, payload)
            else:
                running = self._running.get((context.queue, context.id))
                keep = running.policy.keep_logs if running else 0
                await broker.add_log(context.queue, context.id, payload, keep)
        except TaskflowError as exc:
            logger.warning("could not record %s of job %s: %s", kind, context.id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they end.
        task = asyncio.create_task(coro)
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    def update_data(self, context: JobContext, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into a running job's data (from the loop or a thread)."""
        running = self._running.get((context.queue, context.id))
        if running is None:
            raise LookupError(f"job {context.id} is not running here")
        data = {**(_json.loads(running.fields.get("data")) or {}), **changes}
        text = _json.dumps(data, f"data of {context.name}")
        running.fields["data"] = text
        self._call_on_loop(self._require_broker().set_data(context.queue, context.id, text))

    def add_children(self, context: JobContext, signatures: list[Any]) -> list[Any]:
        return self._call_on_loop(self.aadd_children(context, signatures))  # type: ignore

    async def aadd_children(self, context: JobContext, signatures: list[Any]) -> list[Any]:
        from taskflow.flows import aadd_flow

        parent_key = self._require_broker().keys(context.queue).job(context.id)
        return [await aadd_flow(sig, parent_key) for sig in signatures]

    def _call_on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the worker's loop and wait for it, from a job's thread; on the
        loop itself, schedule it (its result isn't awaited)."""
        loop = self._require_loop()
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._spawn(coro)
            return None
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def load_children(self, context: JobContext) -> bool:
        """Load the children outcomes of a parent that BullMQ added (it records no
        order, so they aren't loaded up front); False when the job has no children."""
        assert self._reader is not None, "the worker is not running"
        processed, failed = self._reader.children_of(context.queue, context.id)
        if not processed and not failed:
            return False
        _set_children(context, [], processed, failed)
        return True

    def _report_from_child(self, queue: str, job_id: str, kind: str, payload: str) -> None:
        running = self._running.get((queue, job_id))
        if running is None:
            return
        if kind == "data":
            self.update_data(running.context, _json.loads(payload))
        else:
            self._spawn(self._send_report(running.context, kind, payload))

    def _running_ids(self) -> dict[str, list[str]]:
        """{queue: ids of running jobs} for each queue with jobs running or being taken;
        called from the lock renewer's thread."""
        found: dict[str, list[str]] = {q: [] for q, n in list(self._in_flight.items()) if n}
        for queue, job_id in list(self._running):
            found.setdefault(queue, []).append(job_id)
        return found

    def _lock_lost(self, queue: str, job_id: str) -> None:
        logger.warning("lock of job %s in %s was lost", job_id, queue)

    def cancel_local(self, queue: str, job_id: str) -> bool:
        """Cancel a job if this worker runs it; see :mod:`taskflow.executors`."""
        running = self._running.get((queue, job_id))
        if running is None:
            return False
        logger.info("cancelling job %s in %s", job_id, queue)
        self._require_executors().cancel(running.context)
        return True

    async def _listen_for_cancels(self) -> None:
        broker = self._require_broker()
        while True:
            try:
                async for queue, job_id in broker.cancel_requests(self.queues):
                    self.cancel_local(queue, job_id)
            except TaskflowError as exc:
                logger.warning("%s; again in 1 s", exc)
                await asyncio.sleep(1.0)

    def _require_executors(self) -> Executors:
        assert self._executors is not None, "the worker is not running"
        return self._executors

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the worker is not running"
        return self._loop

    # -- housekeeping -----------------------------------------------------------------

    async def _check_stalled(self) -> None:
        broker = self._require_broker()
        while True:
            for queue in self.queues:
                try:
                    found = await broker.check_stalled(
                        queue, self.max_stalled, self.stalled_interval_ms)
                except TaskflowError as exc:
                    logger.warning("stalled check on %s failed: %s", queue, exc)
                    continue
                if found:
                    self._report_stalled(queue, *found)
            await asyncio.sleep(self.stalled_interval_ms / 1000.0)

    def _report_stalled(self, queue: str, recovered: list[str], failed: list[str]) -> None:
        for job_id in recovered:
            logger.warning("job %s in %s stalled; back in the queue", job_id, queue)
            self._emit("stalled", job_id)
        for job_id in failed:
            logger.warning("job %s in %s stalled too often; failed", job_id, queue)
        if recovered:
            self._ready[queue] = True
            self._wake[queue].set()

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self._listeners.get(event, ()):
            try:
                callback(*args)
            except Exception:
                logger.exception("worker %r listener %r raised", event, callback)


def _is_final(exc: BaseException) -> bool:
    """Errors that no retry can mend: fail the job at once."""
    if isinstance(exc, ChildFailure):
        return exc.final
    return isinstance(exc, UnrecoverableError | UnknownTaskError | EncodeError
                      | JobCancelledError | asyncio.CancelledError)


def _set_children(context: JobContext, order: list[str], processed: dict[str, str],
                  failed: dict[str, str]) -> None:
    """Give a parent's context its children outcomes. Without a recorded order (a parent
    BullMQ added): completed children first, then failed ones, as Redis lists them."""
    order = order or [*processed, *(key for key in failed if key not in processed)]
    context.set_children(order, {k: _json.loads(v) for k, v in processed.items()}, failed)


class _DeferredFailure(UnrecoverableError):
    """A failure another worker decided (``defa``), applied as it stands."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ChildFailure):
        return exc.reason
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails still fails its job
        text = "(its message could not be read)"
    if isinstance(exc, _DeferredFailure):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
