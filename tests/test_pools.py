"""Where jobs run: child processes, lock renewal under CPU load, timeouts, cancels, steps."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
import redis

from taskflow import App, JobFailedError, current_job
from taskflow.control import MoveToDelayed, WaitForChildren
from tests.apps.pools import register
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


@pytest.fixture
def tasks(aapp: App) -> dict[str, Any]:
    return register(aapp)


async def test_process_pool_runs_and_reports(aapp: App, tasks: dict[str, Any]) -> None:
    job = await tasks["where"].adelay("a")
    async with running_worker(aapp, concurrency=2):
        result = await job.aresult(timeout=30)
        await asyncio.sleep(0.1)  # the child's reports travel beside its result
    assert result["tag"] == "a"
    assert result["pid"] != os.getpid()
    assert (await job.ainfo()).progress == 50
    assert await job.alogs() == ["in child for a"]


async def test_child_exception_fails_with_its_traceback(aapp: App, tasks: dict[str, Any]
                                                        ) -> None:
    job = await tasks["raises"].adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="KeyError: 'missing thing'") as failed:
            await job.aresult(timeout=30)
    assert 'raise KeyError("missing thing")' in (failed.value.traceback or "")


@pytest.mark.parametrize(("how", "reason"), [("exit", "exit code 3"), ("segv", "signal 11")])
async def test_dead_child_fails_the_attempt_and_is_replaced(
    aapp: App, tasks: dict[str, Any], how: str, reason: str
) -> None:
    job = await tasks["dies_once"].adelay(how)
    async with running_worker(aapp, concurrency=1) as worker:
        assert await job.aresult(timeout=30) == "survived"
        assert worker.running_jobs == 0
    info = await job.ainfo()
    assert info.attempts_made == 2
    assert info.failed_reason == f"ChildDiedError: worker process died ({reason})"


async def test_children_are_recycled_by_job_count_and_memory(
    aapp: App, tasks: dict[str, Any]
) -> None:
    pid = tasks["pid"]
    async with running_worker(aapp, concurrency=1, max_jobs_per_child=2):
        pids = [await (await pid.adelay(i)).aresult(timeout=30) for i in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    async with running_worker(aapp, concurrency=1, max_memory_mb=1):
        small = [await (await pid.adelay(i)).aresult(timeout=30) for i in range(3)]
    assert len(set(small)) == 3


BURN_S = 10.0


async def test_cpu_bound_jobs_keep_their_locks_in_every_pool(
    aapp: App, tasks: dict[str, Any], raw: redis.Redis
) -> None:
    """A 2 s lock and 10 s of CPU-bound work, on the loop, in a thread and in a child:
    each completes once and never counts as stalled, while a second worker runs the
    stalled check every 0.5 s."""
    jobs = [await tasks[name].adelay(BURN_S) for name in ("burn_loop", "burn_thread",
                                                            "burn_child")]
    async with running_worker(aapp, concurrency=3, lock_ms=2000, stalled_interval_ms=500), \
            running_worker(aapp, concurrency=1, lock_ms=2000, stalled_interval_ms=500):
        for job in jobs:
            assert await job.aresult(timeout=BURN_S * 4) > 0
    events = [f for _, f in raw.xrange(f"{aapp.prefix}:default:events")]
    assert not [f for f in events if f["event"] == "stalled"]
    for job in jobs:
        info = await job.ainfo()
        assert (info.attempts_started, info.attempts_made) == (1, 1)


async def test_timeouts_fail_attempts_in_each_pool(aapp: App, tasks: dict[str, Any]) -> None:
    spans: list[tuple[float, float]] = []

    @aapp.task(attempts=2, timeout_s=0.3)
    def slow_thread() -> None:
        started = time.monotonic()
        time.sleep(0.8)
        spans.append((started, time.monotonic()))

    coro = await tasks["async_sleep"].options(timeout_s=0.2, attempts=2).adelay(5)
    child = await tasks["sleep_child"].options(timeout_s=0.5).adelay(30)
    thread = await slow_thread.adelay()
    async with running_worker(aapp, concurrency=3):
        with pytest.raises(JobFailedError, match=r"timed out after 0\.2 s"):
            await coro.aresult(timeout=30)
        with pytest.raises(JobFailedError, match="child killed"):
            await child.aresult(timeout=30)
        with pytest.raises(JobFailedError, match="ran on to its end"):
            await thread.aresult(timeout=30)
    assert (await coro.ainfo()).attempts_made == 2
    assert len(spans) == 2 and spans[1][0] >= spans[0][1]  # never two runs at once


async def test_cancelling_waiting_and_running_jobs(aapp: App, tasks: dict[str, Any]) -> None:
    seen_flag = threading.Event()

    @aapp.task(attempts=3)
    def polite() -> str:
        while not current_job().cancelled:
            time.sleep(0.01)
        seen_flag.set()
        return "stopped early"

    later = await tasks["async_sleep"].options(delay_s=60).adelay(1)
    assert await later.acancel() == "removed"
    assert await later.astate() == "unknown"
    coro = await tasks["async_sleep"].options(attempts=3).adelay(30)
    child = await tasks["sleep_child"].options(attempts=3).adelay(30)
    thread = await polite.adelay()
    async with running_worker(aapp, concurrency=3):
        for job in (coro, child, thread):
            while await job.astate() != "active":
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # let the child start its sleep
        for job in (coro, child, thread):
            assert await job.acancel() == "signalled"
        for job in (coro, child, thread):
            with pytest.raises(JobFailedError, match="cancelled"):
                await job.aresult(timeout=30)
    assert seen_flag.is_set()
    for job in (coro, child, thread):
        assert (await job.ainfo()).attempts_made == 1  # not retried
    assert await (await tasks["where"].adelay("x")).acancel() == "removed"


async def test_step_jobs_move_themselves_without_failing(aapp: App, tasks: dict[str, Any]
                                                         ) -> None:
    @aapp.task
    def fan_out(total: int = 0) -> int:
        job = current_job()
        try:
            return sum(job.results())
        except LookupError:
            job.add_children([tasks["pid"].s(i) for i in range(3)])
            raise WaitForChildren() from None

    @aapp.task
    async def later(step: str = "first") -> str:
        if step == "first":
            current_job().update_data(step="second")
            raise MoveToDelayed(0.2)
        return step

    started = time.monotonic()
    step = await later.adelay()
    child_step = await tasks["step_child"].adelay()
    fan = await fan_out.adelay()
    async with running_worker(aapp, concurrency=4):
        assert await step.aresult(timeout=30) == "second"
        assert time.monotonic() - started >= 0.2
        assert await child_step.aresult(timeout=30) == "step 1"
        assert await fan.aresult(timeout=30) > 0
    for job in (step, child_step, fan):
        info = await job.ainfo()
        assert info.attempts_made == 1 and info.failed_reason is None


async def test_flow_parent_in_a_child_process_reads_its_children(
    aapp: App, tasks: dict[str, Any]
) -> None:
    root = await tasks["sum_children"].s(children=[tasks["pid"].s(i) for i in range(2)]
                                         ).adelay()
    async with running_worker(aapp, concurrency=2):
        total = await root.aresult(timeout=30)
    pids = [await child.aresult(timeout=5) for child in root.children]
    assert total == sum(pids) + 2
