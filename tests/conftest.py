"""Fixtures: every test runs against each server taskflow supports, on loopback.

``TASKFLOW_TEST_SERVERS`` picks them (comma-separated, default ``redis,embedded``):
``redis`` is the Redis at ``TASKFLOW_TEST_REDIS_URL`` (default 127.0.0.1:6379, db 0),
``embedded`` a server started by taskflow's embedded manager in a temporary home.
Each test gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskflow import App, Worker
from taskflow.backends import embedded

SERVERS = [s for s in os.environ.get("TASKFLOW_TEST_SERVERS", "redis,embedded").split(",") if s]
REDIS_URL = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _system_redis() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session", params=SERVERS)
def server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    """The URL of one server under test (the test is repeated for each)."""
    if request.param == "redis":
        yield _system_redis()
        return
    home: Path = tmp_path_factory.mktemp("embedded")
    url = embedded.ensure_server(home)
    try:
        yield url
    finally:
        embedded.stop_server(home)


@pytest.fixture
def prefix() -> str:
    return f"tft{uuid.uuid4().hex[:10]}"


@pytest.fixture
def app(server_url: str, prefix: str) -> Iterator[App]:
    """A fresh App on the server under test, with a key prefix of its own."""
    made = App("tests", server_url, prefix=prefix)
    yield made
    made.close()
    client = redis.Redis.from_url(server_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])
    client.close()


@pytest.fixture
async def aapp(app: App) -> AsyncIterator[App]:
    """The ``app`` fixture for async tests: closes the test loop's connections after."""
    yield app
    await app.aclose()


@pytest.fixture
def raw(server_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the server under test, for looking at keys."""
    client = redis.Redis.from_url(server_url, decode_responses=True)
    yield client
    client.close()


@contextlib.asynccontextmanager
async def running_worker(app: App, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker in this event loop for the duration of the block."""
    worker = app.worker(**options)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
