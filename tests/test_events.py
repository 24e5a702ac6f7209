"""Queue events: the stream of what happens to jobs, as iteration and callbacks."""

from __future__ import annotations

import asyncio

import pytest

from taskflow import App, QueueEvent, QueueEvents
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


async def test_lifecycle_events_in_order(aapp: App) -> None:
    @aapp.task
    def work(x: int) -> int:
        return x * 2

    events = QueueEvents(aapp, "default", block_ms=200)
    seen: list[QueueEvent] = []

    async def collect() -> None:
        async for event in events:
            seen.append(event)
            if event.event == "completed":
                events.close()

    reader = asyncio.create_task(collect())
    await asyncio.sleep(0.05)
    job = await work.adelay(21)
    async with running_worker(aapp, concurrency=1):
        await asyncio.wait_for(reader, 10)
    mine = [e.event for e in seen if e.job_id == job.id]
    assert mine == ["added", "waiting", "active", "completed"]
    assert next(e for e in seen if e.event == "completed").returnvalue == 42


async def test_callbacks_and_wait_for(aapp: App) -> None:
    @aapp.task(attempts=1)
    def boom() -> None:
        raise RuntimeError("bad")

    events = QueueEvents(aapp, block_ms=200)
    failed: list[str | None] = []
    events.on("failed", lambda e: failed.append(e.failed_reason))
    runner = asyncio.create_task(events.run())
    await asyncio.sleep(0.05)
    job = await boom.adelay()
    waiter = QueueEvents(aapp, since="0", block_ms=200)
    async with running_worker(aapp, concurrency=1):
        event = await waiter.wait_for(job.id, timeout=10)
    assert event.event == "failed"
    await asyncio.sleep(0.3)
    events.close()
    await asyncio.wait_for(runner, 5)
    assert failed == ["RuntimeError: bad"]


async def test_reader_resumes_after_reconnect(aapp: App) -> None:
    @aapp.task
    def noop(i: int) -> None: ...

    events = QueueEvents(aapp, "default", block_ms=100)
    first = await noop.adelay(1)
    iterator = events.__aiter__()
    # the reader started before any job: everything added later is seen, once
    events.last_ids["default"] = "0"
    got = [await anext(iterator) for _ in range(2)]
    assert [e.event for e in got] == ["added", "waiting"]
    await aapp.aclose()  # drop every connection; the next read opens new ones
    second = await noop.adelay(2)
    rest = [await anext(iterator) for _ in range(2)]
    assert [(e.event, e.job_id) for e in rest] == [("added", second.id), ("waiting", second.id)]
    assert first.id != second.id
    saved = dict(events.last_ids)
    third = await noop.adelay(3)
    resumed = QueueEvents(aapp, "default", since=saved, block_ms=100)
    again = resumed.__aiter__()
    assert (await anext(again)).job_id == third.id
