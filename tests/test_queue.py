"""The Queue API: pause, counts, drain, clean, obliterate, remove, retry, promote, paging."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis

from taskflow import App, ConfigurationError, JobFailedError, JobNotFoundError, QueueBusyError
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


def _noop(app: App):  # type: ignore[no-untyped-def]
    @app.task
    def noop(i: int = 0) -> int:
        return i

    return noop


async def test_counts_and_paging(aapp: App) -> None:
    noop = _noop(aapp)
    jobs = await aapp.aadd_bulk([noop.s(i) for i in range(5)])
    await noop.options(delay_s=60).adelay(9)
    await noop.options(priority=2).adelay(8)
    queue = aapp.queue()
    counts = await queue.acounts()
    assert (counts["waiting"], counts["delayed"], counts["prioritized"]) == (5, 1, 1)
    page = await queue.ajob_ids("waiting", 0, 1)
    assert page == [jobs[0].id, jobs[1].id]  # oldest first
    infos = await queue.ajobs("waiting", 2, 3)
    assert [i.data for i in infos] == [{"i": 2}, {"i": 3}]
    with pytest.raises(ConfigurationError):
        await queue.ajob_ids("bogus")


async def test_pause_and_resume_for_all_workers(aapp: App) -> None:
    noop = _noop(aapp)
    queue = aapp.queue()
    await queue.apause()
    assert await queue.ais_paused()
    job = await noop.adelay(1)
    async with running_worker(aapp, concurrency=2):
        await asyncio.sleep(0.4)
        assert await job.astate() == "waiting"
        await queue.aresume()
        assert await job.aresult(timeout=10) == 1


async def test_drain_keeps_delayed_unless_asked(aapp: App) -> None:
    noop = _noop(aapp)
    await aapp.aadd_bulk([noop.s(i) for i in range(2500)])
    await noop.options(priority=3).adelay()
    await noop.options(delay_s=60).adelay()
    queue = aapp.queue()
    assert await queue.adrain() == 2501
    counts = await queue.acounts()
    assert (counts["waiting"], counts["prioritized"], counts["delayed"]) == (0, 0, 1)
    assert await queue.adrain(delayed=True) == 1


async def test_clean_by_age_and_limit(aapp: App, raw: redis.Redis) -> None:
    noop = _noop(aapp)
    jobs = await aapp.aadd_bulk([noop.s(i) for i in range(30)])
    async with running_worker(aapp, concurrency=8):
        for job in jobs:
            await job.aresult(timeout=10)
    queue = aapp.queue()
    assert await queue.aclean(grace_s=60) == 0  # all younger than a minute
    await asyncio.sleep(0.05)
    assert await queue.aclean(grace_s=0, limit=10) == 10
    assert (await queue.acounts())["completed"] == 20
    assert await queue.aclean(grace_s=0) == 20
    assert not raw.exists(f"{aapp.prefix}:default:{jobs[0].id}")
    cleaned = [f for _, f in raw.xrange(f"{aapp.prefix}:default:events") if f["event"] == "cleaned"]
    assert sum(int(f["count"]) for f in cleaned) == 30


async def test_remove_job_and_refuse_running(aapp: App, raw: redis.Redis) -> None:
    started = asyncio.Event()

    @aapp.task
    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.5)

    noop = _noop(aapp)
    waiting = await noop.adelay(1)
    queue = aapp.queue()
    assert await queue.aremove(waiting.id) is True
    assert await queue.aremove(waiting.id) is False
    assert raw.llen(f"{aapp.prefix}:default:wait") == 0
    running = await slow.adelay()
    async with running_worker(aapp, concurrency=1):
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(QueueBusyError):
            await queue.aremove(running.id)
        await running.aresult(timeout=10)


async def test_retry_failed_jobs(aapp: App) -> None:
    fail = True

    @aapp.task(attempts=1)
    def sometimes(i: int) -> int:
        if fail:
            raise RuntimeError("not yet")
        return i

    jobs = await aapp.aadd_bulk([sometimes.s(i) for i in range(5)])
    queue = aapp.queue()
    async with running_worker(aapp, concurrency=2):
        for job in jobs:
            with pytest.raises(Exception, match="not yet"):
                await job.aresult(timeout=10)
        fail = False
        assert await queue.aretry(limit=2) == 2
        assert await queue.aretry() == 3
        assert [await job.aresult(timeout=10) for job in jobs] == list(range(5))
    assert (await jobs[0].ainfo()).attempts_made == 1  # counted afresh


async def test_promote_and_change_delay_and_priority(aapp: App, raw: redis.Redis) -> None:
    noop = _noop(aapp)
    queue = aapp.queue()
    later = await noop.options(delay_s=3600).adelay(1)
    await queue.apromote(later.id)
    assert await later.astate() == "waiting"
    with pytest.raises(ConfigurationError, match="it is waiting"):
        await queue.apromote(later.id)
    with pytest.raises(JobNotFoundError):
        await queue.apromote("nope")
    other = await noop.options(delay_s=3600).adelay(2)
    await queue.achange_delay(other.id, 0.2)
    due = int(raw.zscore(f"{aapp.prefix}:default:delayed", other.id)) // 4096
    assert abs(due - time.time() * 1000 - 200) < 1000
    await queue.achange_priority(later.id, 7)
    assert raw.zscore(f"{aapp.prefix}:default:prioritized", later.id) is not None
    assert (await later.ainfo()).opts["priority"] == 7
    async with running_worker(aapp, concurrency=2):
        assert await other.aresult(timeout=10) == 2
        assert await later.aresult(timeout=10) == 1


async def test_obliterate(aapp: App, raw: redis.Redis) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @aapp.task
    async def hold() -> None:
        started.set()
        await release.wait()

    noop = _noop(aapp)
    await aapp.aadd_bulk([noop.s(i) for i in range(1200)])
    queue = aapp.queue()
    await queue.aobliterate()
    assert list(raw.scan_iter(match=f"{aapp.prefix}:default:*")) == []
    await hold.adelay()
    async with running_worker(aapp, concurrency=1):
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(QueueBusyError):
            await queue.aobliterate()
        await queue.aobliterate(force=True)
        assert list(raw.scan_iter(match=f"{aapp.prefix}:default:*")) == []
        release.set()


async def test_workers_are_listed(aapp: App) -> None:
    noop = _noop(aapp)
    queue = aapp.queue()
    async with running_worker(aapp, concurrency=1, name="listed-worker"):
        job = await noop.adelay()
        await job.aresult(timeout=10)
        await asyncio.sleep(0.1)
        names = [w["name"] for w in await queue.aworkers()]
    assert "listed-worker" in names


def test_sync_forms(app: App) -> None:
    noop = _noop(app)
    noop.delay(1)
    queue = app.queue()
    queue.pause()
    assert queue.is_paused()
    queue.resume()
    assert queue.counts()["waiting"] == 1
    assert queue.drain() == 1


async def test_metrics_and_prometheus_text(aapp: App, raw: redis.Redis) -> None:
    from taskflow.metrics import aprometheus_text

    @aapp.task(attempts=1)
    def outcome(ok: bool) -> None:
        if not ok:
            raise RuntimeError("no")

    jobs = await aapp.aadd_bulk([outcome.s(i % 3 != 0) for i in range(9)])
    async with running_worker(aapp, concurrency=3):
        for job in jobs:
            with contextlib.suppress(JobFailedError):
                await job.aresult(timeout=10)
    queue = aapp.queue()
    assert (await queue.ametrics("completed")).total == 6
    assert (await queue.ametrics("failed")).total == 3
    # a minute later, the first data point holds that minute's count
    meta = f"{aapp.prefix}:default:metrics:completed"
    raw.hset(meta, "prevTS", int(raw.hget(meta, "prevTS")) - 120_000)
    late = await outcome.adelay(True)
    async with running_worker(aapp, concurrency=1):
        await late.aresult(timeout=10)
    metrics = await queue.ametrics("completed")
    assert metrics.total == 7
    assert metrics.per_minute == [0, 6]  # newest first: 0 last minute, 6 the one before
    text = await aprometheus_text(aapp)
    assert 'taskflow_jobs{queue="default",state="completed"} 7' in text
    assert 'taskflow_jobs_finished_total{queue="default",outcome="failed"} 3' in text
    assert "# TYPE taskflow_jobs_finished_total counter" in text


async def test_pausing_one_worker_only(aapp: App) -> None:
    noop = _noop(aapp)
    async with running_worker(aapp, concurrency=1, name="held") as held:
        held.pause()
        job = await noop.adelay(5)
        await asyncio.sleep(0.3)
        assert await job.astate() == "waiting"
        held.resume()
        assert await job.aresult(timeout=10) == 5
        assert not held.paused


async def test_events_stream_trimming_is_configurable(aapp: App, raw: redis.Redis) -> None:
    noop = _noop(aapp)
    queue = aapp.queue()
    await queue.aset_max_events(100)
    await aapp.aadd_bulk([noop.s(i) for i in range(3000)])
    # trimming is approximate (whole stream nodes): far below the 6000 entries written
    assert raw.xlen(f"{aapp.prefix}:default:events") < 1000
    with pytest.raises(ConfigurationError):
        await queue.aset_max_events(0)
