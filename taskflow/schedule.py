"""Job schedulers: cron patterns and intervals that turn each due run into exactly one job.

``task.schedule(cron="0 6 * * MON", tz="Europe/Berlin")`` or ``task.schedule(every=60)``
stores a named scheduler in its queue's keys, in BullMQ 6's layout: the ``repeat`` zset
holds its id scored by its next run (ms), the ``repeat:<id>`` hash its pattern or
interval, time zone, start, end, limit, the count of jobs made (``ic``) and the job
template. Its next run always exists as a delayed job with the id
``repeat:<id>:<run ms>`` and the field ``rjk`` = the scheduler id; the add's duplicate
check makes that one job per run, whoever adds it.

There is no scheduler process. A worker that takes a job made by a scheduler computes
the run after it and moves the scheduler there (:func:`follow`) with one script call
that compares-and-sets on the run it took, so of any number of workers and producers,
one moves it and the others do nothing. A crash between taking the job and moving on
heals twice over: the stalled check gives the job to another worker, which moves on,
and the next ``schedule()`` call (at the next app start) places the missing run.

The rules:

- Time is the Redis server's (``TIME``), never the client's, so a skewed client clock
  makes no job early or late.
- Missed runs are not replayed: when no worker ran for a while, the overdue job runs
  once and the next run is the first one after the server's current time.
- Cron patterns have 5 fields, or 6 with seconds first (as BullMQ's); they are read on
  the local wall clock of ``tz`` (UTC by default), so a daily 06:00 stays 06:00 across
  daylight-saving changes. A local time that occurs twice (fall back) runs once, at its
  first occurrence; hourly and shorter patterns therefore skip the repeated hour (use
  ``every`` for runs at fixed real-time intervals). A local time that does not exist
  (spring forward) runs at the moment the clocks jump: 02:30 in Europe/Berlin on the
  last Sunday of March runs at 03:00 CEST, as croniter and cron(8) do.
- ``every`` counts real time from the scheduler's start (``start=``, else the moment it
  was created), so its runs keep their phase whatever the workers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]

from taskflow import _json, _portal
from taskflow.errors import BrokerError, ConfigurationError, TaskflowError

if TYPE_CHECKING:
    import builtins

    from taskflow.app import App
    from taskflow.backends.redis import RedisBroker
    from taskflow.task import Task

logger = logging.getLogger(__name__)

JOB_ID_PREFIX = "repeat:"
# Attempts at a compare-and-set write before giving up; each loses only to another write.
CAS_TRIES = 20
FOLLOW_TRIES = 3
FOLLOW_RETRY_S = 0.5
MAX_ID_LENGTH = 200
TIMING_FIELDS = ("pattern", "every", "tz", "startDate")


class ScheduleOptions(TypedDict, total=False):
    """The options of :meth:`Task.schedule <taskflow.Task.schedule>`.

    Exactly one of ``cron`` and ``every``.

    cron: a cron pattern, 5 fields (minute hour day month weekday) or 6 with seconds
        first; read on the wall clock of ``tz``.
    every: an interval, a ``timedelta`` or seconds (> 0); runs at start + k * every.
    tz: an IANA time zone name for ``cron`` (default ``UTC``).
    start / end: no run before ``start`` or after ``end`` (datetimes; naive ones are
        read in ``tz``, else UTC).
    limit: the number of runs, in all; the scheduler then finishes.
    immediately: also run once now, when the scheduler is created or retimed.
    id: the scheduler's id (no ``:``); default: the task's name, plus a digest of the
        arguments when there are any. The same id updates the same scheduler.
    args / kwargs: the arguments of each run, bound to the task's signature.
    queue: the queue of the jobs (default: the task's).
    job_options: options of each job as ``task.options(...)`` takes them (``priority``,
        ``attempts``, ``backoff``, ``keep_completed``, ...), over the task's defaults;
        not ``job_id`` or ``delay_s``.
    """

    cron: str
    every: timedelta | float
    tz: str
    start: datetime
    end: datetime
    limit: int
    immediately: bool
    id: str
    args: tuple[Any, ...] | list[Any]
    kwargs: Mapping[str, Any]
    queue: str
    job_options: Mapping[str, Any]


# -- when runs fall ------------------------------------------------------------------------


def next_cron_time(pattern: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first run of a cron ``pattern`` in ``zone`` strictly after ``after`` (aware),
    by the daylight-saving rules of this module; None when the pattern never matches.

    The pattern walks the naive local wall clock (croniter's own time-zone handling
    runs a repeated local time twice), and each wall-clock match maps to one instant.
    """
    after_utc = after.astimezone(UTC)
    wall = after_utc.astimezone(zone).replace(tzinfo=None)
    matches = croniter(pattern, wall, second_at_beginning=len(pattern.split()) == 6)
    while True:
        try:
            candidate: datetime = matches.get_next(datetime)
        except CroniterBadDateError:
            return None
        instant = _instant_of(candidate, zone)
        # Matches in a repeated hour map to its first pass, which may be behind us.
        if instant > after_utc:
            return instant.astimezone(zone)


def _instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall-clock time runs: its first occurrence, or for a time that
    does not exist, the moment the clocks jump over it."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 reads the wall time with the offset before the jump (an instant
    # after it) and fold=1 with the offset after (an instant before it).
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    after_jump = first.astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after_jump:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


@dataclass(frozen=True)
class Timing:
    """When a scheduler runs: a cron pattern in a time zone, or every ``every_ms`` from
    ``offset_ms`` (mod every), between ``start_ms`` and ``end_ms`` (all ms since epoch)."""

    pattern: str | None = None
    tz: str = "UTC"
    every_ms: int | None = None
    offset_ms: int = 0
    start_ms: int | None = None
    end_ms: int | None = None

    def next_after(self, after_ms: int) -> int | None:
        """The first run strictly after ``after_ms`` (and not before the start); None
        when there is none before the end."""
        base = after_ms if self.start_ms is None else max(after_ms, self.start_ms - 1)
        slot: int | None
        if self.every_ms is not None:
            slot = base - (base - self.offset_ms) % self.every_ms + self.every_ms
        else:
            assert self.pattern is not None
            after = datetime.fromtimestamp(base // 1000, UTC) + timedelta(milliseconds=base % 1000)
            found = next_cron_time(self.pattern, ZoneInfo(self.tz), after)
            slot = None if found is None else round(found.timestamp() * 1000)
        if slot is None or (self.end_ms is not None and slot > self.end_ms):
            return None
        return slot

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Timing:
        """The timing stored in a scheduler's hash (BullMQ's field names)."""
        every = _int_field(fields, "every")
        return cls(
            pattern=fields.get("pattern") or None, tz=fields.get("tz") or "UTC",
            every_ms=every, offset_ms=_int_field(fields, "offset") or 0,
            start_ms=_int_field(fields, "startDate"), end_ms=_int_field(fields, "endDate"),
        )


def _int_field(fields: Mapping[str, str], name: str) -> int | None:
    text = fields.get(name)
    return round(float(text)) if text else None


# -- checking what schedule() is given -----------------------------------------------------


def _check_cron(pattern: object) -> str:
    if not isinstance(pattern, str) or len(pattern.split()) not in (5, 6):
        raise ConfigurationError(
            f"cron must be a pattern of 5 fields, or 6 with seconds first: {pattern!r}")
    text = " ".join(pattern.split())
    seconds_first = len(text.split()) == 6
    try:
        valid = croniter.is_valid(text, second_at_beginning=seconds_first)
        if valid:
            croniter(text, datetime(2000, 1, 1), second_at_beginning=seconds_first).get_next()
    except (CroniterError, ValueError):
        valid = False
    if not valid:
        raise ConfigurationError(f"not a cron pattern, or one that never runs: {pattern!r}")
    return text


def _check_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"tz must be an IANA time zone name: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone: {name!r}") from None


def _check_every(every: object) -> int:
    if isinstance(every, timedelta):
        every = every.total_seconds()
    is_number = isinstance(every, int | float) and not isinstance(every, bool)
    if not is_number or not math.isfinite(every) or every <= 0:  # type: ignore[arg-type,operator]
        raise ConfigurationError(f"every must be a timedelta or seconds > 0: {every!r}")
    every_ms = round(every * 1000)  # type: ignore[operator]
    if every_ms < 1:
        raise ConfigurationError(f"every must be at least 1 ms: {every!r}")
    return every_ms


def _check_moment(what: str, value: object, zone: ZoneInfo) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return round(value.timestamp() * 1000)


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(f"limit must be an int >= 1: {limit!r}")
    return limit


def _check_id(scheduler_id: object) -> str:
    if not isinstance(scheduler_id, str) or not scheduler_id.strip():
        raise ConfigurationError(f"a scheduler id must be a non-empty string: {scheduler_id!r}")
    if ":" in scheduler_id or len(scheduler_id) > MAX_ID_LENGTH:
        raise ConfigurationError(
            f"a scheduler id may not contain ':' or pass {MAX_ID_LENGTH} characters: "
            f"{scheduler_id!r}")
    return scheduler_id


def _template_opts(task: Task[Any, Any], job_options: dict[str, Any]) -> str:
    refused = {"job_id", "delay_s"} & set(job_options)
    if refused:
        raise ConfigurationError(
            f"a schedule makes its own job ids and due times; not allowed: {sorted(refused)}")
    opts = task.default_options.merge(**job_options).to_bullmq()
    # The job of each run gets its own jobId and delay (schedule_upsert.lua).
    opts.pop("jobId", None)
    opts.pop("delay", None)
    return _json.dumps(opts, "job options")


def _mapping(what: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be a mapping: {value!r}")
    return dict(value)


def _default_id(task_name: str, data: str) -> str:
    if data == "{}":
        return task_name
    return f"{task_name}#{hashlib.sha256(data.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Plan:
    """A checked ``schedule()`` call: what to store, before reading what is stored."""

    scheduler_id: str
    queue: str
    task_name: str
    timing: Timing
    limit: int | None
    immediately: bool
    data: str
    opts: str

    @classmethod
    def make(cls, task: Task[Any, Any], options: Mapping[str, Any]) -> Plan:
        """Check every option; raise ConfigurationError (TypeError for arguments that
        don't fit the task's signature, EncodeError for values JSON can't carry)."""
        unknown = set(options) - set(ScheduleOptions.__annotations__)
        if unknown:
            raise TypeError(f"schedule() got unknown option(s): {', '.join(sorted(unknown))}")
        cron, every = options.get("cron"), options.get("every")
        if (cron is None) == (every is None):
            raise ConfigurationError("a schedule needs exactly one of cron= and every=")
        if every is not None and options.get("tz") is not None:
            raise ConfigurationError("tz= applies to cron schedules; every= counts real time")
        zone = _check_zone(options.get("tz") or "UTC")
        timing = Timing(
            pattern=None if cron is None else _check_cron(cron), tz=zone.key,
            every_ms=None if every is None else _check_every(every),
            start_ms=_check_moment("start", options.get("start"), zone),
            end_ms=_check_moment("end", options.get("end"), zone),
        )
        if timing.start_ms is not None and timing.end_ms is not None \
                and timing.end_ms <= timing.start_ms:
            raise ConfigurationError("a schedule's end must come after its start")
        immediately = bool(options.get("immediately", False))
        if immediately and timing.start_ms is not None:
            raise ConfigurationError("immediately= and start= exclude each other")
        queue = options.get("queue") or task.queue
        if not isinstance(queue, str) or ":" in queue:
            raise ConfigurationError(f"queue names may not be empty or contain ':': {queue!r}")
        args, kwargs = options.get("args", ()), options.get("kwargs", {})
        if not isinstance(args, tuple | list) or not isinstance(kwargs, Mapping):
            raise ConfigurationError("args= must be a tuple or list, kwargs= a mapping")
        data = task.encode_args(tuple(args), dict(kwargs))
        return cls(
            scheduler_id=_check_id(options.get("id") or _default_id(task.name, data)),
            queue=queue, task_name=task.name, timing=timing,
            limit=_check_limit(options.get("limit")), immediately=immediately, data=data,
            opts=_template_opts(task, _mapping("job_options", options.get("job_options"))),
        )

    def decide(self, stored: Mapping[str, str], now_ms: int) -> tuple[dict[str, str], int | None]:
        """The fields to write over ``stored`` and the run to place (see
        schedule_upsert.lua): an unchanged timing keeps its phase."""
        fields = self._fields()
        same_timing = bool(stored.get("name")) and all(
            stored.get(name, "") == fields[name] for name in TIMING_FIELDS)
        timing = self.timing
        if same_timing:
            fields["offset"] = stored.get("offset", "")
        elif timing.every_ms is not None:
            anchor = now_ms if timing.start_ms is None else timing.start_ms
            fields["offset"] = str(anchor % timing.every_ms)
        timing = Timing.from_fields(fields)
        if self.immediately and not same_timing:
            end_ms = timing.end_ms
            return fields, now_ms if end_ms is None or now_ms <= end_ms else None
        return fields, timing.next_after(now_ms)

    def _fields(self) -> dict[str, str]:
        t = self.timing

        def text(value: int | str | None) -> str:
            return "" if value is None else str(value)

        return {
            "name": self.task_name, "pattern": text(t.pattern),
            "every": text(t.every_ms), "tz": t.tz if t.pattern else "",
            "startDate": text(t.start_ms), "endDate": text(t.end_ms), "limit": text(self.limit),
            "offset": "", "data": self.data, "opts": self.opts,
        }


# -- what is stored -------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerInfo:
    """A snapshot of one job scheduler.

    ``next_run`` is None once the scheduler finished (its limit reached or its end
    passed); ``iterations`` counts the jobs it made, the pending next one included
    (BullMQ's ``ic``).
    Times are aware datetimes in the scheduler's time zone (UTC for ``every``).
    """

    id: str
    queue: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str | None
    start: datetime | None
    end: datetime | None
    limit: int | None
    iterations: int
    next_run: datetime | None
    data: Any
    opts: dict[str, Any]

    @classmethod
    def from_fields(cls, scheduler_id: str, queue: str, fields: Mapping[str, str],
                    next_ms: int | None) -> SchedulerInfo:
        timing = Timing.from_fields(fields)
        zone: tzinfo = UTC
        if timing.pattern:
            # A scheduler written elsewhere (a Node producer) may name a zone unknown here.
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                zone = ZoneInfo(timing.tz)

        def moment(ms: int | None) -> datetime | None:
            return None if ms is None else datetime.fromtimestamp(ms / 1000, zone)

        return cls(
            id=scheduler_id, queue=queue, task=fields.get("name", ""), cron=timing.pattern,
            every_s=None if timing.every_ms is None else timing.every_ms / 1000,
            tz=timing.tz if timing.pattern else None,
            start=moment(timing.start_ms), end=moment(timing.end_ms),
            limit=_int_field(fields, "limit"), iterations=_int_field(fields, "ic") or 0,
            next_run=moment(next_ms), data=_json.loads(fields.get("data")),
            opts=_json.loads(fields.get("opts")) or {},
        )


async def aupsert(app: App, plan: Plan) -> SchedulerInfo:
    """Create or update the scheduler of ``plan``; an unchanged one stays untouched."""
    broker = app.broker()
    for _ in range(CAS_TRIES):
        now_ms, stored, next_ms = await broker.read_scheduler(plan.queue, plan.scheduler_id)
        fields, slot = plan.decide(stored, now_ms)
        if slot is None and not stored.get("name"):
            raise ConfigurationError(
                f"schedule {plan.scheduler_id!r} would never run: its end is before its "
                "first run")
        status, placed = await broker.upsert_scheduler(
            plan.queue, plan.scheduler_id, next_ms, stored, fields, slot)
        if status != "conflict":
            logger.debug("scheduler %s on %s %s; next run %s", plan.scheduler_id, plan.queue,
                         status, placed)
            found = await _aread(broker, plan.queue, plan.scheduler_id)
            # None only when removed meanwhile: then report what was written.
            return found or SchedulerInfo.from_fields(
                plan.scheduler_id, plan.queue, fields, placed)
    raise BrokerError(f"scheduler {plan.scheduler_id!r} kept changing while being written")


async def _aread(broker: RedisBroker, queue: str, scheduler_id: str) -> SchedulerInfo | None:
    _, fields, next_ms = await broker.read_scheduler(queue, scheduler_id)
    if not fields:
        return None
    return SchedulerInfo.from_fields(scheduler_id, queue, fields, next_ms)


# -- the worker's part -----------------------------------------------------------------------


def slot_of(job_id: str, scheduler_id: str) -> int | None:
    """The run (ms) of a job a scheduler made, from its id ``repeat:<id>:<run ms>``."""
    head = f"{JOB_ID_PREFIX}{scheduler_id}:"
    tail = job_id[len(head):]
    return int(tail) if job_id.startswith(head) and tail.isdigit() else None


async def follow(broker: RedisBroker, queue: str, scheduler_id: str, job_id: str) -> None:
    """Move the scheduler that made job ``job_id`` on to its next run, as a worker does
    when it takes the job. Does nothing when another worker or producer did it already,
    or the scheduler is gone; never raises: trouble is logged, and healed by the stalled
    check or the next ``schedule()`` call."""
    slot = slot_of(job_id, scheduler_id)
    if slot is None:
        logger.warning("job %s names scheduler %r but is not one of its runs; left alone",
                       job_id, scheduler_id)
        return
    for attempt in range(1, FOLLOW_TRIES + 1):
        try:
            await _follow_once(broker, queue, scheduler_id, slot)
            return
        except TaskflowError as exc:
            logger.warning("could not move scheduler %r on %s past job %s (try %d): %s",
                           scheduler_id, queue, job_id, attempt, exc)
        except Exception:
            logger.exception("scheduler %r on %s: the run after job %s failed",
                             scheduler_id, queue, job_id)
            return
        await asyncio.sleep(FOLLOW_RETRY_S)


async def _follow_once(broker: RedisBroker, queue: str, scheduler_id: str, slot: int) -> None:
    for _ in range(CAS_TRIES):
        now_ms, stored, next_ms = await broker.read_scheduler(queue, scheduler_id)
        if not stored.get("name") or next_ms != slot:
            return  # removed, finished, or already moved past this run
        # Missed runs are not replayed: the next run is the first after now.
        following = Timing.from_fields(stored).next_after(max(slot, now_ms))
        status, placed = await broker.upsert_scheduler(
            queue, scheduler_id, next_ms, stored, stored, following)
        if status == "conflict":
            continue
        if placed is None:
            logger.info("scheduler %r on %s finished", scheduler_id, queue)
        else:
            logger.debug("scheduler %r on %s: next run at %d", scheduler_id, queue, placed)
        return
    raise BrokerError(f"scheduler {scheduler_id!r} kept changing while being moved on")


# -- listing, reading, removing ---------------------------------------------------------------


class Schedulers:
    """The job schedulers of some queues (an app's, by default): list, read, remove.

    A finished scheduler (limit reached, end passed) has no next run: it leaves the
    list, ``get`` still finds it, and ``schedule()`` with the same id does not restart
    it unless its limit or end changes. ``remove`` deletes it.
    """

    def __init__(self, app: App, queues: list[str]) -> None:
        self.app = app
        self.queues = queues

    def __repr__(self) -> str:
        return f"<Schedulers queues={self.queues!r}>"

    async def alist(self) -> builtins.list[SchedulerInfo]:
        """The schedulers with a next run, soonest first."""
        broker = self.app.broker()
        found: builtins.list[SchedulerInfo] = []
        for queue in self.queues:
            for scheduler_id, next_ms, fields in await broker.list_schedulers(queue):
                found.append(SchedulerInfo.from_fields(scheduler_id, queue, fields, next_ms))
        return sorted(found, key=lambda s: (s.next_run.timestamp() if s.next_run else math.inf,
                                            s.id))

    async def aget(self, scheduler_id: str, queue: str | None = None) -> SchedulerInfo | None:
        """The scheduler with this id (in ``queue``, else the first of the queues that
        has one), or None."""
        broker = self.app.broker()
        for name in [queue] if queue else self.queues:
            found = await _aread(broker, name, scheduler_id)
            if found is not None:
                return found
        return None

    async def aremove(self, scheduler_id: str, queue: str | None = None) -> bool:
        """Remove the scheduler and the delayed job of its next run (a job of an earlier
        run that already waits or runs is left to finish); False when there was none."""
        broker = self.app.broker()
        removed = False
        for name in [queue] if queue else self.queues:
            removed = await broker.remove_scheduler(name, scheduler_id) or removed
        if removed:
            logger.debug("scheduler %r removed", scheduler_id)
        return removed

    def list(self) -> builtins.list[SchedulerInfo]:
        """Like :meth:`alist`, from sync code."""
        return _portal.run(self.alist())

    def get(self, scheduler_id: str, queue: str | None = None) -> SchedulerInfo | None:
        """Like :meth:`aget`, from sync code."""
        return _portal.run(self.aget(scheduler_id, queue))

    def remove(self, scheduler_id: str, queue: str | None = None) -> bool:
        """Like :meth:`aremove`, from sync code."""
        return _portal.run(self.aremove(scheduler_id, queue))
