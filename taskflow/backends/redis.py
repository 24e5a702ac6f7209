"""The Redis broker: the engine's operations as Lua scripts on a Redis or Valkey server."""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
import orjson
import redis as syncredis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from taskflow import scripts
from taskflow.backends.base import NewJob, Outcome, Taken
from taskflow.errors import BrokerError, ConfigurationError
from taskflow.keys import DEFAULT_PREFIX, QueueKeys

logger = logging.getLogger(__name__)

URL_ENV = "TASKFLOW_BROKER_URL"
# The job fields finish_fetch.lua returns for each job it takes, in its order.
TAKEN_FIELDS = ("name", "data", "opts", "atm", "parentKey", "stacktrace", "rjk", "defa", "tfc",
                "ats")
SCHEMES = ("redis", "rediss", "unix")

# Job states, and the key whose membership tells each one.
ZSET_STATES = (
    ("completed", "completed"), ("failed", "failed"), ("delayed", "delayed"),
    ("prioritized", "prioritized"), ("waiting-children", "waiting-children"),
)
LIST_STATES = (("active", "active"), ("waiting", "wait"))


def resolve_url(url: str | None) -> str:
    """The broker URL: the one given, else ``$TASKFLOW_BROKER_URL``, else the embedded server."""
    if url == "":
        raise ConfigurationError("the broker URL is empty (leave it out for the embedded server)")
    url = url or os.environ.get(URL_ENV) or None
    if url is None:
        from taskflow.backends import embedded

        return embedded.ensure_server()
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"broker URL must start with redis://, rediss:// or unix://: {url!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that isn't a number
    except ValueError as exc:
        raise ConfigurationError(f"bad port in broker URL {url!r}: {exc}") from exc
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigurationError(f"the database in broker URL {url!r} must be a number")
    return url


@asynccontextmanager
async def wrap_errors(what: str) -> AsyncIterator[None]:
    """Raise redis failures as BrokerError, saying which operation failed."""
    try:
        yield
    except RedisError as exc:
        raise BrokerError(f"{what} failed: {exc}") from exc
    except OSError as exc:
        raise BrokerError(f"{what} failed: {exc}") from exc


class _HiredisPacking:
    """Encode commands with hiredis (C) instead of redis-py's asyncio encoder (Python):
    a finish call carries hundreds of arguments, and this is most of its client cost."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class FastConnection(_HiredisPacking, aioredis.Connection):
    """A TCP connection with hiredis command encoding."""


class FastUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    """A unix socket connection with hiredis command encoding."""


# A server that accepts connections but doesn't answer must not hang callers forever.
CONNECT_TIMEOUT_S = 10.0
# Longer than any blocking read taskflow makes (BZPOPMIN up to 10 s, XREAD 5 s).
SOCKET_TIMEOUT_S = 30.0


def connect(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio client for ``url``; with hiredis packing except over TLS."""
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    scheme = urlsplit(url).scheme
    if scheme == "redis":
        options.setdefault("connection_class", FastConnection)
    elif scheme == "unix":
        options.setdefault("connection_class", FastUnixConnection)
    return aioredis.Redis.from_url(url, decode_responses=True, **options)


class RedisBroker:
    """The engine's operations on one Redis server, for one event loop."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis = connect(url)
        self._blocking_clients: dict[str, aioredis.Redis] = {}
        self._scripts: dict[str, AsyncScript] = {
            name: self.client.register_script(scripts.source(name)) for name in scripts.NAMES
        }
        self._keys: dict[str, QueueKeys] = {}

    def keys(self, queue: str) -> QueueKeys:
        """The key names of ``queue`` (cached)."""
        found = self._keys.get(queue)
        if found is None:
            found = self._keys[queue] = QueueKeys(queue, self.prefix)
        return found

    async def _run(self, name: str, queue: str, args: list[Any]) -> Any:
        keys = self.keys(queue)
        async with wrap_errors(f"{name} on queue {queue!r}"):
            return await self._scripts[name](keys=keys.engine, args=[keys.base, *args])

    async def call(self, what: str, command: Callable[[], Any]) -> Any:
        """Run one plain (read-only) command, its errors wrapped."""
        async with wrap_errors(what):
            return await command()

    # -- changing state: one script each ----------------------------------------------

    async def add_jobs(self, queue: str, jobs: list[NewJob]) -> list[tuple[str, bool]]:
        """Add jobs in one call; returns (id, duplicated) per job, in order."""
        args: list[Any] = [len(jobs)]
        for job in jobs:
            args += [job.job_id, job.name, job.data, job.opts, job.delay_ms, job.priority,
                     "1" if job.lifo else "0"]
        rows = await self._run("add", queue, args)
        return [(str(job_id), dup == 1) for job_id, dup in rows]

    async def finish_fetch(
        self, queue: str, token: str, lock_ms: int, fetch: int, worker: str,
        outcomes: list[Outcome], metrics_points: int = 0,
    ) -> Taken:
        """Record outcomes, then take up to ``fetch`` ready jobs, in one call."""
        # What outcomes share (retention, parent, ...) goes once, as a "profile".
        profiles: dict[tuple[Any, ...], int] = {}
        rows: list[Any] = []
        for o in outcomes:
            shared = (o.stacktrace, o.retry_delay_ms, o.keep_count, o.keep_age_s, o.parent_key,
                      o.parent_policy)
            index = profiles.setdefault(shared, len(profiles) + 1)
            rows += [o.job_id, o.kind, o.value, o.attempts_made, index]
        args: list[Any] = [token, lock_ms, fetch, worker, len(outcomes), metrics_points,
                           len(profiles)]
        for shared in profiles:
            args += shared
        args += rows
        statuses, taken, next_delayed = await self._run("finish_fetch", queue, args)
        jobs = [(str(job_id), {k: v for k, v in zip(TAKEN_FIELDS, values, strict=False) if v})
                for job_id, values in taken]
        return Taken([int(s) for s in statuses], jobs, int(next_delayed))

    async def add_flow(self, nodes: list[tuple[str, NewJob, int]], parent_key: str = ""
                       ) -> list[str]:
        """Add a tree of jobs in one call: (queue, job, parent index) per node, parents
        first, the root under ``parent_key`` when given. Raises ConfigurationError,
        writing nothing, when a custom id exists (or the parent doesn't)."""
        args: list[Any] = [len(nodes), parent_key]
        for queue, job, parent_index in nodes:
            args += [self.keys(queue).base, job.job_id, job.name, job.data, job.opts,
                     job.delay_ms, job.priority, "1" if job.lifo else "0", parent_index]
        ok, found = await self._run("add_flow", nodes[0][0], args)
        if not ok and not found:
            raise ConfigurationError(f"no parent job {parent_key!r}; nothing was added")
        if not ok:
            queue, job, _ = nodes[int(found) - 1]
            raise ConfigurationError(
                f"job id {job.job_id!r} exists already in queue {queue!r}; nothing was added")
        return [str(job_id) for job_id in found]

    async def reserve_ids(self, queue: str, count: int) -> int:
        """Take ``count`` ids from a queue's counter; returns the first."""
        key = self.keys(queue).key("id")
        last = await self.call("reserving ids", lambda: self.client.incrby(key, count))
        return int(last) - count + 1

    async def stage_flow(self, root_queue: str, flow_id: str, rows: list[list[Any]]) -> int:
        """Stage nodes of a large flow (see flow_stage.lua); 0 or the 1-based index of a
        node whose custom id is taken."""
        args: list[Any] = [flow_id, len(rows)]
        for row in rows:
            args += row
        found = await self._run("flow_stage", root_queue, args)
        return 0 if found == 1 else int(found[1])

    async def commit_flow(self, root_queue: str, flow_id: str,
                          groups: list[tuple[str, str, list[str]]]) -> bool:
        """Make a staged flow visible: (queue prefix, kind, ids) per group."""
        args: list[Any] = [flow_id, len(groups)]
        for base, kind, ids in groups:
            args += [base, kind, len(ids), *ids]
        return bool(await self._run("flow_commit", root_queue, args))

    async def discard_flow(self, root_queue: str, flow_id: str, batch: int = 500) -> None:
        """Remove a staged flow's jobs, in bounded batches."""
        while await self._run("flow_discard", root_queue, [flow_id, batch]):
            pass

    async def children_of(self, queue: str, job_id: str
                          ) -> tuple[dict[str, str], dict[str, str]]:
        """A parent's children outcomes: (child key -> result JSON, child key -> reason)."""
        key = self.keys(queue).job(job_id)
        pipe: Pipeline = self.client.pipeline(transaction=True)
        pipe.hgetall(key + ":processed")
        pipe.hgetall(key + ":failed")
        async with wrap_errors("reading children"):
            processed, failed = await pipe.execute()
        return processed, failed

    async def child_keys(self, queue: str, job_id: str) -> list[str]:
        """A parent's children's keys: in the order given when taskflow added the flow,
        else pending ones, then completed, then failed (those the parent went on without,
        then those that failed it)."""
        key = self.keys(queue).job(job_id)
        pipe: Pipeline = self.client.pipeline(transaction=True)
        pipe.hget(key, "tfc")
        pipe.smembers(key + ":dependencies")
        pipe.hkeys(key + ":processed")
        pipe.hkeys(key + ":failed")
        pipe.hkeys(key + ":unsuccessful")
        async with wrap_errors("reading children"):
            ordered, pending, done, failed, unsuccessful = await pipe.execute()
        if ordered:
            return [str(k) for k in orjson.loads(ordered)]
        found = [*sorted(pending), *sorted(done), *sorted(failed), *sorted(unsuccessful)]
        return list(dict.fromkeys(str(k) for k in found))

    async def check_stalled(
        self, queue: str, max_stalled: int, interval_ms: int
    ) -> tuple[list[str], list[str]] | None:
        """Run the stalled check unless another worker ran it within the interval."""
        result = await self._run("stalled", queue, [max_stalled, interval_ms])
        if not result:
            return None
        recovered, failed = result
        return [str(x) for x in recovered], [str(x) for x in failed]

    async def set_progress(self, queue: str, job_id: str, progress_json: str) -> bool:
        return bool(await self._run("progress", queue, [job_id, progress_json]))

    async def add_log(self, queue: str, job_id: str, line: str, keep: int) -> int:
        return int(await self._run("log", queue, [job_id, line, keep]))

    async def set_max_events(self, queue: str, count: int) -> None:
        """How many entries the events stream keeps, about (BullMQ's meta field)."""
        meta = self.keys(queue).key("meta")
        await self.call("setting max events",
                        lambda: self.client.hset(meta, "opts.maxLenEvents", str(count)))

    async def set_data(self, queue: str, job_id: str, data_json: str) -> None:
        """Replace a job's data (a step job saving where it is)."""
        key = self.keys(queue).job(job_id)
        await self.call("updating job data", lambda: self.client.hset(key, "data", data_json))

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._run("pause", queue, ["paused" if paused else "resumed"])

    async def remove_jobs(self, queue: str, where: str, batch: int, cutoff_ms: int | None,
                          event: str) -> int:
        """Remove up to ``batch`` jobs from one state; the count removed."""
        cutoff = "" if cutoff_ms is None else cutoff_ms
        return int(await self._run("remove_jobs", queue, [where, batch, cutoff, event]))

    async def remove_job(self, queue: str, job_id: str, children: bool) -> int:
        """1 removed, 0 no such job, -1 running (locked)."""
        return int(await self._run("remove_job", queue, [job_id, "1" if children else "0"]))

    async def retry_jobs(self, queue: str, state: str, batch: int, job_id: str = "") -> int:
        return int(await self._run("retry_jobs", queue, [state, batch, job_id]))

    async def reschedule(self, queue: str, job_id: str, action: str, value: int = 0) -> int:
        return int(await self._run("reschedule", queue, [job_id, action, value]))

    async def drop_queue_keys(self, queue: str) -> bool:
        return bool(await self._run("obliterate_meta", queue, []))

    # -- waiting ----------------------------------------------------------------------

    def client_name(self, queue: str) -> str:
        """BullMQ's client-name prefix of a queue: ``<prefix>:<base64 of queue name>``."""
        encoded = base64.b64encode(queue.encode()).decode()
        return f"{self.prefix}:{encoded}"

    async def wait_for_marker(self, queue: str, timeout_s: float, worker: str = "") -> bool:
        """Block until a job may be ready (the queue's marker) or the timeout passes.

        The connection is named ``<client name>:w:<worker>``, so listing a queue's
        workers (here and in BullMQ tools) finds it without extra commands.
        """
        blocking = self._blocking_clients.get(queue)
        if blocking is None:
            name = f"{self.client_name(queue)}:w:{worker}" if worker else None
            blocking = connect(self.url, client_name=name)
            self._blocking_clients[queue] = blocking
        marker = self.keys(queue).key("marker")
        async with wrap_errors(f"waiting on queue {queue!r}"):
            got = await blocking.bzpopmin(marker, timeout=max(0.001, timeout_s))
        return got is not None

    async def workers(self, queue: str) -> list[dict[str, str]]:
        """The workers connected to ``queue`` (from CLIENT LIST), with their name and address."""
        prefix = f"{self.client_name(queue)}:w:"
        clients = await self.call("listing clients", self.client.client_list)
        return [
            {"name": c["name"][len(prefix):], "addr": c.get("addr", ""), "age": c.get("age", "")}
            for c in clients if c.get("name", "").startswith(prefix)
        ]

    # -- cancelling running jobs --------------------------------------------------------

    async def request_cancel(self, queue: str, job_id: str) -> int:
        """Tell the workers of ``queue`` to cancel ``job_id``; how many listened."""
        channel = self.keys(queue).key("cancel")
        return int(await self.call("cancelling", lambda: self.client.publish(channel, job_id)))

    async def cancel_requests(self, queues: list[str]) -> AsyncIterator[tuple[str, str]]:
        """(queue, job id) for each cancel request, as they come (a blocking subscription,
        no polling)."""
        by_channel = {self.keys(q).key("cancel"): q for q in queues}
        # Its own connection, without a read timeout: a subscription is quiet for hours.
        listener = connect(self.url, socket_timeout=None)
        pubsub = listener.pubsub(ignore_subscribe_messages=True)
        try:
            async with wrap_errors("listening for cancels"):
                await pubsub.subscribe(*by_channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield by_channel[str(message["channel"])], str(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await listener.aclose()

    # -- reading ----------------------------------------------------------------------

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        """The fields of a job's hash, or None when there is no such job."""
        key = self.keys(queue).job(job_id)
        fields = await self.call("reading a job", lambda: self.client.hgetall(key))
        return cast(dict[str, str], fields) or None

    async def get_jobs(self, queue: str, job_ids: list[str]) -> list[dict[str, str]]:
        """The hashes of several jobs in one round trip ({} for a missing one)."""
        keys = self.keys(queue)
        pipe: Pipeline = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        async with wrap_errors("reading jobs"):
            return cast(list[dict[str, str]], await pipe.execute())

    async def metrics(self, queue: str, outcome: str, points: int) -> tuple[int, list[int]]:
        """(total count, per-minute counts newest first, up to ``points``) for an outcome."""
        key = self.keys(queue).key(f"metrics:{outcome}")
        pipe: Pipeline = self.client.pipeline(transaction=True)
        pipe.hget(key, "count")
        pipe.lrange(key + ":data", 0, points - 1)
        async with wrap_errors("reading metrics"):
            total, data = await pipe.execute()
        return int(total or 0), [int(x) for x in data]

    async def get_logs(self, queue: str, job_id: str) -> list[str]:
        key = self.keys(queue).job(job_id) + ":logs"
        lines = await self.call("reading job logs", lambda: self.client.lrange(key, 0, -1))
        return cast(list[str], lines)

    async def job_state(self, queue: str, job_id: str) -> str:
        """One of waiting, prioritized, delayed, active, completed, failed,
        waiting-children, or unknown."""
        keys = self.keys(queue)
        pipe: Pipeline = self.client.pipeline(transaction=True)
        for _, suffix in ZSET_STATES:
            pipe.zscore(keys.key(suffix), job_id)
        for _, suffix in LIST_STATES:
            pipe.lpos(keys.key(suffix), job_id)
        async with wrap_errors("reading a job's state"):
            found = await pipe.execute()
        states = [state for state, _ in ZSET_STATES + LIST_STATES]
        for state, hit in zip(states, found, strict=True):
            if hit is not None:
                return "waiting" if state == "prioritized" else state
        return "unknown"

    async def counts(self, queue: str) -> dict[str, int]:
        """Number of jobs per state."""
        keys = self.keys(queue)
        pipe: Pipeline = self.client.pipeline(transaction=True)
        for _, suffix in ZSET_STATES:
            pipe.zcard(keys.key(suffix))
        for _, suffix in LIST_STATES:
            pipe.llen(keys.key(suffix))
        async with wrap_errors("counting jobs"):
            found = await pipe.execute()
        states = [state for state, _ in ZSET_STATES + LIST_STATES]
        return dict(zip(states, (int(x) for x in found), strict=True))

    async def is_paused(self, queue: str) -> bool:
        meta = self.keys(queue).key("meta")
        return bool(await self.call("reading meta", lambda: self.client.hexists(meta, "paused")))

    async def last_event_id(self, queue: str) -> str:
        """The id of the newest entry of the events stream ("0-0" when empty)."""
        stream = self.keys(queue).key("events")
        rows = await self.call("reading events", lambda: self.client.xrevrange(stream, count=1))
        return str(rows[0][0]) if rows else "0-0"

    async def read_events(
        self, streams: dict[str, str], block_ms: int | None, count: int = 1000
    ) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        """XREAD over events streams, ``{stream key: last id seen}``; blocks up to block_ms."""
        async with wrap_errors("reading events"):
            if block_ms is None:
                rows = await self.client.xread(streams, count=count)  # type: ignore[arg-type]
            else:
                # A blocking read holds one connection of the pool; the pool grows on demand.
                rows = await self.client.xread(
                    streams, count=count, block=block_ms  # type: ignore[arg-type]
                )
        return [(str(stream), [(str(i), dict(f)) for i, f in entries]) for stream, entries in rows]

    async def ping(self) -> None:
        await self.call("PING", self.client.ping)

    async def close(self) -> None:
        """Close the connections of this broker."""
        for client in [*self._blocking_clients.values(), self.client]:
            await client.aclose()
        self._blocking_clients.clear()

    # -- job schedulers (taskflow.schedule; scripts/schedule_*.lua) ---------------------

    # The fields of a scheduler's hash that schedule_upsert.lua compares and writes, in
    # its ARGV order ("ic", the count of jobs made, is the script's own).
    SCHEDULER_FIELDS = ("name", "pattern", "every", "tz", "startDate", "endDate", "limit",
                        "offset", "data", "opts")

    def _scheduler_keys(self, queue: str, scheduler_id: str) -> list[str]:
        keys = self.keys(queue)
        return [*keys.engine, keys.key("repeat"), keys.key(f"repeat:{scheduler_id}")]

    async def read_scheduler(
        self, queue: str, scheduler_id: str
    ) -> tuple[int, dict[str, str], int | None]:
        """(server time ms, the scheduler's hash or {}, its next run ms or None), in one
        transaction."""
        keys = self.keys(queue)
        pipe: Pipeline = self.client.pipeline(transaction=True)
        pipe.time()
        pipe.hgetall(keys.key(f"repeat:{scheduler_id}"))
        pipe.zscore(keys.key("repeat"), scheduler_id)
        async with wrap_errors(f"reading scheduler {scheduler_id!r}"):
            (seconds, micros), fields, score = await pipe.execute()
        next_ms = None if score is None else round(float(score))
        return int(seconds) * 1000 + int(micros) // 1000, cast(dict[str, str], fields), next_ms

    async def upsert_scheduler(
        self, queue: str, scheduler_id: str, read_next_ms: int | None,
        read_fields: dict[str, str], fields: dict[str, str], slot_ms: int | None,
    ) -> tuple[str, int | None]:
        """Write a scheduler and place its next run, if it is still as read (see
        schedule_upsert.lua); returns (status, next run ms or None)."""
        args: list[Any] = [scheduler_id, "" if read_next_ms is None else read_next_ms]
        args += [read_fields.get(name, "") for name in self.SCHEDULER_FIELDS]
        args += [fields.get(name, "") for name in self.SCHEDULER_FIELDS]
        args.append("" if slot_ms is None else slot_ms)
        keys = self._scheduler_keys(queue, scheduler_id)
        async with wrap_errors(f"writing scheduler {scheduler_id!r} on queue {queue!r}"):
            status, next_ms = await self._scripts["schedule_upsert"](
                keys=keys, args=[self.keys(queue).base, *args])
        return str(status), int(next_ms) if next_ms else None

    async def remove_scheduler(self, queue: str, scheduler_id: str) -> bool:
        """Remove a scheduler and the delayed job of its next run; False when none."""
        keys = self._scheduler_keys(queue, scheduler_id)
        async with wrap_errors(f"removing scheduler {scheduler_id!r} on queue {queue!r}"):
            removed = await self._scripts["schedule_remove"](
                keys=keys, args=[self.keys(queue).base, scheduler_id])
        return bool(removed)

    async def list_schedulers(self, queue: str) -> list[tuple[str, int, dict[str, str]]]:
        """(id, next run ms, hash) of each scheduler of ``queue`` with a next run, soonest
        first."""
        keys = self.keys(queue)
        rows = await self.call("listing schedulers", lambda: self.client.zrange(
            keys.key("repeat"), 0, -1, withscores=True))
        pipe: Pipeline = self.client.pipeline(transaction=False)
        for scheduler_id, _ in rows:
            pipe.hgetall(keys.key(f"repeat:{scheduler_id}"))
        async with wrap_errors("reading schedulers"):
            hashes = await pipe.execute() if rows else []
        return [(str(scheduler_id), round(float(score)), cast(dict[str, str], fields))
                for (scheduler_id, score), fields in zip(rows, hashes, strict=True)]


class LockRenewer:
    """Renews a worker's locks from a thread of its own, on a connection of its own,
    three times per lock duration.

    The event loop may be busy (a coroutine that never awaits, a sync function on the
    loop): renewal doesn't wait for it. ``running`` returns {queue: [job ids]} and is
    called from the renewer's thread; ``on_lost(queue, job_id)`` likewise.
    """

    def __init__(self, url: str, prefix: str, token: str, lock_ms: int,
                 running: Callable[[], dict[str, list[str]]],
                 on_lost: Callable[[str, str], None]) -> None:
        self.prefix = prefix
        self.token = token
        self.lock_ms = lock_ms
        self.running = running
        self.on_lost = on_lost
        self._client = syncredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S)
        self._script = self._client.register_script(scripts.source("extend_locks"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taskflow-locks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def renew_now(self) -> None:
        """One round of renewals (what the thread does three times per lock duration)."""
        for queue, job_ids in self.running().items():
            keys = QueueKeys(queue, self.prefix)
            try:
                lost = self._script(keys=keys.engine,
                                    args=[keys.base, self.token, self.lock_ms, *job_ids])
            except (RedisError, OSError) as exc:
                logger.warning("could not renew locks on %s: %s", queue, exc)
                continue
            for job_id in lost:
                self.on_lost(queue, str(job_id))

    def _loop(self) -> None:
        # Three renewals per lock duration: a thread that waits long for the GIL (other
        # threads burning CPU) still renews before the lock lapses.
        while not self._stop.wait(self.lock_ms / 3000.0):
            self.renew_now()


class SyncReader:
    """A few reads for code that can't await (a task asking for its children on the
    loop): one plain connection, opened on first use."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client: syncredis.Redis | None = None

    def children_of(self, queue: str, job_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """Like :meth:`RedisBroker.children_of`."""
        if self._client is None:
            self._client = syncredis.Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S)
        key = QueueKeys(queue, self.prefix).job(job_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(key + ":processed")
        pipe.hgetall(key + ":failed")
        try:
            processed, failed = pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"reading children failed: {exc}") from exc
        return processed, failed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
