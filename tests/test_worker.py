"""Running jobs: results, failures, retries with backoff, ordering, progress and logs."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
import redis

from taskflow import (
    App,
    JobFailedError,
    ResultTimeoutError,
    UnrecoverableError,
    current_job,
)
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


async def test_sync_and_async_tasks_return_results(aapp: App) -> None:
    threads: list[str] = []

    @aapp.task
    def add(x: int, y: int = 2) -> int:
        threads.append(threading.current_thread().name)
        return x + y

    @aapp.task
    async def greet(name: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"hello": name}

    jobs = [await add.adelay(1, y=5), await greet.adelay("ann"), await add.adelay(40)]
    async with running_worker(aapp, concurrency=4):
        results = [await job.aresult(timeout=10) for job in jobs]
    assert results == [6, {"hello": "ann"}, 42]
    assert all(name.startswith("taskflow-job") for name in threads)
    info = await jobs[0].ainfo()
    assert (info.state, info.attempts_made, info.result) == ("completed", 1, 6)


def test_sync_result_from_plain_code(app: App) -> None:
    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    job = mul.delay(6, 7)
    worker = app.worker(concurrency=2)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()))
    thread.start()
    try:
        assert job.result(timeout=10) == 42
        assert job.state() == "completed"
    finally:
        worker.stop()
        thread.join(30)


async def test_result_timeout(aapp: App) -> None:
    @aapp.task
    def never() -> None:
        return None

    job = await never.adelay()
    started = time.monotonic()
    with pytest.raises(ResultTimeoutError):
        await job.aresult(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2


async def test_retries_follow_backoff_then_succeed(aapp: App) -> None:
    seen: list[float] = []

    @aapp.task(attempts=3, backoff=("fixed", 0.3))
    def flaky() -> str:
        seen.append(time.monotonic())
        if len(seen) < 3:
            raise RuntimeError(f"try {len(seen)}")
        return "done"

    job = await flaky.adelay()
    async with running_worker(aapp, concurrency=2):
        assert await job.aresult(timeout=10) == "done"
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(seen) == 3
    assert all(0.28 <= gap < 1.5 for gap in gaps), gaps
    info = await job.ainfo()
    assert info.attempts_made == 3
    assert len(info.stacktrace) == 2 and "try 2" in info.stacktrace[-1]


async def test_exponential_backoff_doubles(aapp: App) -> None:
    seen: list[float] = []

    @aapp.task(attempts=3, backoff=("exponential", 0.2))
    def flaky() -> None:
        seen.append(time.monotonic())
        raise RuntimeError("always")

    job = await flaky.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError) as failed:
            await job.aresult(timeout=10)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert 0.18 <= gaps[0] < 0.6 and 0.38 <= gaps[1] < 1.0, gaps
    assert failed.value.reason == "RuntimeError: always"
    assert "raise RuntimeError" in (failed.value.traceback or "")


async def test_last_failure_keeps_reason_and_events(aapp: App, raw: redis.Redis) -> None:
    @aapp.task(attempts=2)
    def broken() -> None:
        raise ValueError("bad input")

    job = await broken.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="ValueError: bad input"):
            await job.aresult(timeout=10)
    info = await job.ainfo()
    assert (info.state, info.attempts_made, info.failed_reason) == (
        "failed", 2, "ValueError: bad input")
    events = [f for _, f in raw.xrange(f"{aapp.prefix}:default:events") if f.get("jobId") == job.id]
    names = [f["event"] for f in events]
    assert names.count("active") == 2 and names.count("failed") == 1
    assert "retries-exhausted" in names


async def test_unrecoverable_error_fails_at_once(aapp: App) -> None:
    calls: list[int] = []

    @aapp.task(attempts=5)
    def refuse() -> None:
        calls.append(1)
        raise UnrecoverableError("no point retrying")

    job = await refuse.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="no point retrying"):
            await job.aresult(timeout=10)
    assert calls == [1]


async def test_unknown_task_fails_the_job_and_the_worker_goes_on(
    aapp: App, server_url: str
) -> None:
    other = App("other", server_url, prefix=aapp.prefix)

    @other.task(name="ghost", attempts=3)
    def ghost() -> None: ...

    @aapp.task
    def real() -> str:
        return "ran"

    lost = await ghost.adelay()
    fine = await real.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="no task named 'ghost'"):
            await lost.aresult(timeout=10)
        assert await fine.aresult(timeout=10) == "ran"
    assert (await lost.ainfo()).attempts_made == 1
    await other.aclose()


async def test_job_data_that_does_not_fit_the_signature_fails_clearly(
    aapp: App, server_url: str
) -> None:
    producer = App("producer", server_url, prefix=aapp.prefix)

    @producer.task(name="shared")
    def loose(a: int, b: int) -> None: ...

    @aapp.task(name="shared")
    def strict(a: int) -> int:
        return a

    job = await loose.adelay(1, 2)
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="bad arguments for shared"):
            await job.aresult(timeout=10)
    await producer.aclose()


async def test_unencodable_result_fails_the_job(aapp: App) -> None:
    @aapp.task(attempts=3)
    def weird() -> object:
        return object()

    job = await weird.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="cannot be encoded"):
            await job.aresult(timeout=10)
    assert (await job.ainfo()).attempts_made == 1


async def test_priority_then_fifo_then_lifo_order(aapp: App) -> None:
    order: list[str] = []

    @aapp.task
    def record(tag: str) -> None:
        order.append(tag)

    await record.adelay("fifo-1")
    await record.adelay("fifo-2")
    await record.options(priority=5).adelay("p5")
    await record.options(priority=1).adelay("p1-a")
    await record.options(priority=1).adelay("p1-b")
    await record.options(lifo=True).adelay("lifo")
    last = await record.options(priority=9).adelay("p9")
    async with running_worker(aapp, concurrency=1):
        await last.aresult(timeout=10)
    # jobs without a priority come first (LIFO at the front), then by priority, FIFO within
    assert order == ["lifo", "fifo-1", "fifo-2", "p1-a", "p1-b", "p5", "p9"]


async def test_delayed_jobs_run_when_due_in_due_order(aapp: App) -> None:
    ran: list[tuple[str, float]] = []

    @aapp.task
    def record(tag: str) -> None:
        ran.append((tag, time.monotonic()))

    start = time.monotonic()
    late = await record.options(delay_s=0.8).adelay("late")
    await record.options(delay_s=0.4).adelay("early")
    await record.adelay("now")
    async with running_worker(aapp, concurrency=2):
        await late.aresult(timeout=10)
    tags = [tag for tag, _ in ran]
    assert tags == ["now", "early", "late"]
    when = dict(ran)
    assert 0.35 <= when["early"] - start < 1.5
    assert 0.75 <= when["late"] - start < 2.0


async def test_progress_and_logs_reach_redis(aapp: App, raw: redis.Redis) -> None:
    @aapp.task(keep_logs=2)
    def step() -> str:
        job = current_job()
        for pct in (10, 50, 100):
            job.progress(pct)
            job.log(f"at {pct}")
        return "ok"

    @aapp.task
    async def astep() -> str:
        current_job().progress({"stage": "parse"})
        current_job().log("async line")
        return "ok"

    job, ajob = await step.adelay(), await astep.adelay()
    async with running_worker(aapp, concurrency=2):
        await job.aresult(timeout=10)
        await ajob.aresult(timeout=10)
    assert (await job.ainfo()).progress == 100
    assert await job.alogs() == ["at 50", "at 100"]
    assert (await ajob.ainfo()).progress == {"stage": "parse"}
    assert await ajob.alogs() == ["async line"]
    progress = [f["data"] for _, f in raw.xrange(f"{aapp.prefix}:default:events")
                if f["event"] == "progress" and f["jobId"] == job.id]
    assert progress == ["10", "50", "100"]


def test_current_job_outside_a_worker_raises() -> None:
    with pytest.raises(LookupError, match="only available inside a task"):
        current_job()


async def test_worker_events(aapp: App) -> None:
    @aapp.task(attempts=1)
    def maybe(ok: bool) -> str:
        if not ok:
            raise RuntimeError("nope")
        return "yes"

    seen: list[tuple[str, str, object]] = []
    good, bad = await maybe.adelay(True), await maybe.adelay(False)
    async with running_worker(aapp, concurrency=2) as worker:
        worker.on("active", lambda job: seen.append(("active", job.id, None)))
        worker.on("completed", lambda job, result: seen.append(("completed", job.id, result)))
        worker.on("failed", lambda job, exc: seen.append(("failed", job.id, str(exc))))
        await good.aresult(timeout=10)
        with pytest.raises(JobFailedError):
            await bad.aresult(timeout=10)
    assert ("completed", good.id, "yes") in seen
    assert ("failed", bad.id, "nope") in seen
    assert {s[1] for s in seen if s[0] == "active"} == {good.id, bad.id}


async def test_retention_keeps_last_n_and_none(aapp: App, raw: redis.Redis) -> None:
    @aapp.task(keep_completed=3)
    def kept(i: int) -> int:
        return i

    @aapp.task(keep_completed=False)
    def dropped(i: int) -> int:
        return i

    jobs = await aapp.aadd_bulk([kept.s(i) for i in range(10)])
    gone = await dropped.adelay(7)
    async with running_worker(aapp, concurrency=3):
        for job in jobs:
            await job.aresult(timeout=10)
        assert await gone.aresult(timeout=10) == 7  # read from the events stream
    completed = raw.zrange(f"{aapp.prefix}:default:completed", 0, -1)
    assert len(completed) == 3
    assert not raw.exists(f"{aapp.prefix}:default:{gone.id}")
    assert not raw.exists(f"{aapp.prefix}:default:{jobs[0].id}")


async def test_concurrency_limit_is_respected(aapp: App) -> None:
    active = 0
    peak = 0

    @aapp.task
    async def hold() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    jobs = await aapp.aadd_bulk([hold.s() for _ in range(20)])
    async with running_worker(aapp, concurrency=4):
        for job in jobs:
            await job.aresult(timeout=10)
    assert peak == 4


async def test_two_workers_share_a_queue(aapp: App) -> None:
    @aapp.task
    async def slow(i: int) -> int:
        await asyncio.sleep(0.02)
        return i

    jobs = await aapp.aadd_bulk([slow.s(i) for i in range(40)])
    async with running_worker(aapp, concurrency=2, name="w1"), \
            running_worker(aapp, concurrency=2, name="w2"):
        results = [await job.aresult(timeout=20) for job in jobs]
    assert results == list(range(40))
    workers = {(await job.ainfo()).opts.get("pb") for job in jobs[:1]}
    assert workers
    names = set()
    for job in jobs:
        fields = await aapp.broker().get_job(job.queue, job.id)
        assert fields is not None
        names.add(fields["pb"])
    assert names == {"w1", "w2"}


async def test_paused_queue_holds_jobs_until_resumed(aapp: App) -> None:
    @aapp.task
    def ping() -> str:
        return "pong"

    broker = aapp.broker()
    await broker.set_paused("default", True)
    job = await ping.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(ResultTimeoutError):
            await job.aresult(timeout=0.5)
        await broker.set_paused("default", False)
        assert await job.aresult(timeout=10) == "pong"
