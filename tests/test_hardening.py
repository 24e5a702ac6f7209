"""Regression tests for problems found by trying to break taskflow as a new user would."""

from __future__ import annotations

import asyncio
import math
import sys
from datetime import datetime

import pytest
import redis

from taskflow import (
    App,
    ConfigurationError,
    EncodeError,
    JobFailedError,
    JobNotFoundError,
    chain,
)
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("job_id", ["completed", "meta", "id", "events", "wait", "repeat",
                                    "marker", " ", "a b"])
def test_ids_that_would_overwrite_queue_keys_are_refused(app: App, raw: redis.Redis,
                                                         job_id: str) -> None:
    @app.task
    def echo(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError):
        echo.options(job_id=job_id).delay(1)
    assert list(raw.scan_iter(match=f"{app.prefix}:*")) == []


@pytest.mark.parametrize("value", [math.nan, [1.0, math.inf], {"at": datetime(2026, 1, 1)}])
def test_values_json_would_change_are_refused(app: App, value: object) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(EncodeError):
        echo.delay(value)


async def test_sys_exit_and_keyboard_interrupt_fail_the_job_not_the_worker(aapp: App) -> None:
    @aapp.task(attempts=1)
    def leaves() -> None:
        sys.exit(3)

    @aapp.task(attempts=1)
    async def interrupts() -> None:
        raise KeyboardInterrupt

    @aapp.task
    def fine() -> str:
        return "still here"

    exits, interrupt = await leaves.adelay(), await interrupts.adelay()
    async with running_worker(aapp, concurrency=2):
        with pytest.raises(JobFailedError, match="SystemExit: 3"):
            await exits.aresult(timeout=10)
        with pytest.raises(JobFailedError, match="KeyboardInterrupt"):
            await interrupt.aresult(timeout=10)
        assert await (await fine.adelay()).aresult(timeout=10) == "still here"


async def test_an_exception_that_cannot_be_printed_still_fails_its_job(aapp: App) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    @aapp.task(attempts=1)
    def weird() -> None:
        raise Unprintable

    job = await weird.adelay()
    async with running_worker(aapp, concurrency=1):
        with pytest.raises(JobFailedError, match="Unprintable"):
            await job.aresult(timeout=10)


async def test_a_custom_id_twice_in_one_flow_is_refused(aapp: App, raw: redis.Redis) -> None:
    @aapp.task
    def leaf(i: int) -> int:
        return i

    @aapp.task
    def parent() -> None: ...

    children = [leaf.options(job_id="same").s(1), leaf.options(job_id="same").s(2)]
    with pytest.raises(ConfigurationError, match="appears twice"):
        await parent.s(children=children).adelay()
    with pytest.raises(ConfigurationError, match="chain step"):
        chain(leaf.s(1), 5)  # type: ignore[arg-type]
    assert list(raw.scan_iter(match=f"{aapp.prefix}:*")) == []


async def test_cancel_leaves_finished_jobs_and_result_notices_a_removal(aapp: App) -> None:
    @aapp.task
    def echo(x: int) -> int:
        return x

    done = await echo.adelay(1)
    async with running_worker(aapp, concurrency=1):
        assert await done.aresult(timeout=10) == 1
    assert await done.acancel() == "finished"
    assert await done.aresult(timeout=1) == 1
    later = await echo.options(delay_s=60).adelay(2)
    waiter = asyncio.create_task(later.aresult(timeout=10))
    await asyncio.sleep(0.2)
    assert await later.acancel() == "removed"
    with pytest.raises(JobNotFoundError, match="removed"):
        await waiter


def test_bad_urls_and_queue_names_are_refused_where_given(app: App) -> None:
    for url in ("redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/abc", ""):
        with pytest.raises(ConfigurationError):
            App("x", url)

    @app.task
    def echo(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError):
        echo.options(queue="a:b")
    with pytest.raises(ConfigurationError):
        app.worker(["a:b"])
    with pytest.raises(ConfigurationError):
        app.worker(max_jobs_per_child=0)
    with pytest.raises(ConfigurationError):
        app.queue().clean(grace_s=-5)


def test_a_server_that_never_answers_fails_instead_of_hanging() -> None:
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    from taskflow.backends import redis as broker_module

    app = App("silent", f"redis://127.0.0.1:{port}/0")

    @app.task
    def echo(x: int) -> int:
        return x

    old = broker_module.SOCKET_TIMEOUT_S
    broker_module.SOCKET_TIMEOUT_S = 0.5
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            echo.delay(1)
        assert time.monotonic() - started < 10
    finally:
        broker_module.SOCKET_TIMEOUT_S = old
        app.close()
        for conn in held:
            conn.close()
        listener.close()
