"""Queue management: look at a queue and steer it, from Python.

Every operation over many jobs runs in bounded batches (one script call per batch),
so cleaning or draining a queue of millions never blocks the server for long.
Each method has an async form (``a``-prefixed) and a sync form.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from taskflow import _portal
from taskflow.errors import ConfigurationError, JobNotFoundError, QueueBusyError
from taskflow.job import Job, JobInfo
from taskflow.metrics import Metrics

if TYPE_CHECKING:
    from taskflow.app import App
    from taskflow.backends.redis import RedisBroker

logger = logging.getLogger(__name__)

# Jobs per script call: about a millisecond of server time each.
BATCH = 250
FINISHED = ("completed", "failed")
CLEANABLE = ("completed", "failed", "delayed", "wait", "prioritized", "waiting-children")
STATES = ("waiting", "prioritized", "delayed", "active", "completed", "failed",
          "waiting-children")
# Where each state lives: a list (newest first) or a zset (by score).
_LISTS = {"waiting": "wait", "active": "active"}


async def _in_batches(step: Callable[[int], Awaitable[int]], limit: int | None) -> int:
    """Call ``step(batch size)`` (one script call each) until it does less than asked or
    ``limit`` jobs are done; the total done."""
    done = 0
    while limit is None or done < limit:
        batch = BATCH if limit is None else min(BATCH, limit - done)
        count = await step(batch)
        done += count
        if count < batch:
            break
    return done


class Queue:
    """One queue of an app, by name."""

    def __init__(self, app: App, name: str) -> None:
        if not name or ":" in name:
            raise ConfigurationError(f"queue names may not be empty or contain ':': {name!r}")
        self.app = app
        self.name = name

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    def _broker(self) -> RedisBroker:
        return self.app.broker()

    # -- pause, counts, workers -------------------------------------------------------

    async def apause(self) -> None:
        """Pause the queue for every worker: running jobs finish, no new ones start."""
        await self._broker().set_paused(self.name, True)

    async def aresume(self) -> None:
        await self._broker().set_paused(self.name, False)

    async def ais_paused(self) -> bool:
        return await self._broker().is_paused(self.name)

    async def acounts(self) -> dict[str, int]:
        """Jobs per state (waiting counts prioritized jobs too, as ``prioritized``)."""
        return await self._broker().counts(self.name)

    async def aset_max_events(self, count: int) -> None:
        """Trim the queue's events stream to about ``count`` entries (default 10000)."""
        if not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"max events must be an int >= 1: {count!r}")
        await self._broker().set_max_events(self.name, count)

    async def aworkers(self) -> list[dict[str, str]]:
        """The workers connected to this queue now."""
        return await self._broker().workers(self.name)

    async def ametrics(self, outcome: str = "completed", points: int = 60) -> Metrics:
        """Completed or failed jobs per minute (newest first, up to ``points`` minutes)."""
        if outcome not in FINISHED:
            raise ConfigurationError(f"metrics exist for {FINISHED}, not {outcome!r}")
        total, per_minute = await self._broker().metrics(self.name, outcome, points)
        return Metrics(total, per_minute)

    # -- removing ---------------------------------------------------------------------

    async def adrain(self, delayed: bool = False) -> int:
        """Remove every waiting job (and delayed ones when asked); the count removed."""
        where = ["wait", "prioritized"] + (["delayed"] if delayed else [])
        return sum([await self._remove_all(w, None, "cleaned", None) for w in where])

    async def aclean(self, grace_s: float, limit: int | None = None,
                     state: str = "completed") -> int:
        """Remove finished jobs of ``state`` that ended more than ``grace_s`` ago, at most
        ``limit``; the count removed."""
        if grace_s < 0 or (limit is not None and limit < 0):
            raise ConfigurationError(f"grace_s and limit must be >= 0: {grace_s}, {limit}")
        if state not in FINISHED:
            raise ConfigurationError(f"clean works on {FINISHED}, not {state!r}")
        now_ms = await self._server_ms()
        return await self._remove_all(state, now_ms - int(grace_s * 1000), "cleaned", limit)

    async def aobliterate(self, force: bool = False) -> None:
        """Remove the queue and all its jobs. Refused while jobs run, unless ``force``."""
        broker = self._broker()
        counts = await broker.counts(self.name)
        if counts["active"] and not force:
            raise QueueBusyError(
                f"queue {self.name!r} has {counts['active']} running job(s); use force=True")
        await broker.set_paused(self.name, True)
        states = [*CLEANABLE, *(["active"] if force else [])]
        for where in states:
            await self._remove_all(where, None, "", None)
        if not await broker.drop_queue_keys(self.name):
            raise QueueBusyError(f"jobs were added to {self.name!r} while obliterating it")

    async def aremove(self, job_id: str, children: bool = True) -> bool:
        """Remove one job (and its pending children); False when there is no such job.
        A running job can't be removed."""
        found = await self._broker().remove_job(self.name, job_id, children)
        if found == -1:
            raise QueueBusyError(f"job {job_id} is running and can't be removed")
        return found == 1

    async def acancel(self, job_id: str) -> str:
        """Cancel a job: a waiting or delayed one is removed (``"removed"``); a running one
        is stopped by its worker and fails with reason "cancelled", without a retry
        (``"signalled"``). A finished job is left as it is (``"finished"``); ``"missing"``
        when there is no such job."""
        broker = self._broker()
        if await broker.job_state(self.name, job_id) in FINISHED:
            return "finished"
        found = await broker.remove_job(self.name, job_id, False)
        if found == 1:
            return "removed"
        if found == 0:
            return "missing"
        await broker.request_cancel(self.name, job_id)
        return "signalled"

    async def _remove_all(self, where: str, cutoff_ms: int | None, event: str,
                          limit: int | None) -> int:
        broker = self._broker()
        return await _in_batches(
            lambda batch: broker.remove_jobs(self.name, where, batch, cutoff_ms, event), limit)

    async def _server_ms(self) -> int:
        seconds, micros = await self._broker().call("TIME", self._broker().client.time)
        return int(seconds) * 1000 + int(micros) // 1000

    # -- moving -----------------------------------------------------------------------

    async def aretry(self, state: str = "failed", limit: int | None = None) -> int:
        """Send failed (or completed) jobs back to wait, attempts counted afresh."""
        if state not in FINISHED:
            raise ConfigurationError(f"retry works on {FINISHED}, not {state!r}")
        broker = self._broker()
        return await _in_batches(lambda batch: broker.retry_jobs(self.name, state, batch), limit)

    async def aretry_job(self, job_id: str, state: str = "failed") -> bool:
        return await self._broker().retry_jobs(self.name, state, 1, job_id) == 1

    async def apromote(self, job_id: str) -> None:
        """Run a delayed job now."""
        await self._reschedule(job_id, "promote", 0)

    async def achange_delay(self, job_id: str, delay_s: float) -> None:
        """Give a delayed job a new delay, counted from now."""
        await self._reschedule(job_id, "delay", round(delay_s * 1000))

    async def achange_priority(self, job_id: str, priority: int) -> None:
        """Give a job that has not started a new priority."""
        await self._reschedule(job_id, "priority", priority)

    async def _reschedule(self, job_id: str, action: str, value: int) -> None:
        if value < 0:
            raise ConfigurationError(f"{action} value must be >= 0: {value}")
        done = await self._broker().reschedule(self.name, job_id, action, value)
        if done == 0:
            raise JobNotFoundError(f"no job {job_id} in queue {self.name!r}")
        if done == -1:
            state = await self._broker().job_state(self.name, job_id)
            raise ConfigurationError(f"can't {action} job {job_id}: it is {state}")

    # -- reading jobs -----------------------------------------------------------------

    async def ajobs(self, state: str, start: int = 0, end: int = 99) -> list[JobInfo]:
        """Jobs in ``state``, a page at a time (``start``/``end`` inclusive, oldest first
        for waiting and active, newest first for finished)."""
        ids = await self.ajob_ids(state, start, end)
        rows = await self._broker().get_jobs(self.name, ids)
        return [JobInfo.from_fields(job_id, self.name, state, fields)
                for job_id, fields in zip(ids, rows, strict=True) if fields]

    async def ajob_ids(self, state: str, start: int = 0, end: int = 99) -> list[str]:
        if state not in STATES:
            raise ConfigurationError(f"state must be one of {STATES}: {state!r}")
        broker = self._broker()
        key = broker.keys(self.name).key(_LISTS.get(state, state))
        client = broker.client
        if state in _LISTS:
            # Lists take from the right: the oldest job is last.
            ids = await broker.call("reading jobs", lambda: client.lrange(key, -end - 1,
                                                                           -start - 1))
            return [str(i) for i in reversed(ids)]
        if state in FINISHED:
            ids = await broker.call("reading jobs", lambda: client.zrevrange(key, start, end))
        else:
            ids = await broker.call("reading jobs", lambda: client.zrange(key, start, end))
        return [str(i) for i in ids]

    def job(self, job_id: str) -> Job[Any]:
        return Job(self.app, self.name, str(job_id))

    # -- sync forms -------------------------------------------------------------------

    def pause(self) -> None:
        _portal.run(self.apause())

    def resume(self) -> None:
        _portal.run(self.aresume())

    def is_paused(self) -> bool:
        return _portal.run(self.ais_paused())

    def counts(self) -> dict[str, int]:
        return _portal.run(self.acounts())

    def set_max_events(self, count: int) -> None:
        _portal.run(self.aset_max_events(count))

    def workers(self) -> list[dict[str, str]]:
        return _portal.run(self.aworkers())

    def metrics(self, outcome: str = "completed", points: int = 60) -> Metrics:
        return _portal.run(self.ametrics(outcome, points))

    def drain(self, delayed: bool = False) -> int:
        return _portal.run(self.adrain(delayed))

    def clean(self, grace_s: float, limit: int | None = None, state: str = "completed") -> int:
        return _portal.run(self.aclean(grace_s, limit, state))

    def obliterate(self, force: bool = False) -> None:
        _portal.run(self.aobliterate(force))

    def cancel(self, job_id: str) -> str:
        return _portal.run(self.acancel(job_id))

    def remove(self, job_id: str, children: bool = True) -> bool:
        return _portal.run(self.aremove(job_id, children))

    def retry(self, state: str = "failed", limit: int | None = None) -> int:
        return _portal.run(self.aretry(state, limit))

    def retry_job(self, job_id: str, state: str = "failed") -> bool:
        return _portal.run(self.aretry_job(job_id, state))

    def promote(self, job_id: str) -> None:
        _portal.run(self.apromote(job_id))

    def change_delay(self, job_id: str, delay_s: float) -> None:
        _portal.run(self.achange_delay(job_id, delay_s))

    def change_priority(self, job_id: str, priority: int) -> None:
        _portal.run(self.achange_priority(job_id, priority))

    def jobs(self, state: str, start: int = 0, end: int = 99) -> list[JobInfo]:
        return _portal.run(self.ajobs(state, start, end))

    def job_ids(self, state: str, start: int = 0, end: int = 99) -> list[str]:
        return _portal.run(self.ajob_ids(state, start, end))
