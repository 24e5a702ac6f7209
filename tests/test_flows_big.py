"""A flow of 10,000 children adds and resolves without blocking the server."""

from __future__ import annotations

import pytest
import redis

from taskflow import App, ConfigurationError, current_job
from taskflow.flows import ONE_CALL_NODES, aadd_flow
from tests.conftest import running_worker
from tests.test_queue_big import PingProbe

pytestmark = pytest.mark.anyio

CHILDREN = 10_000


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(len(ordered) * 0.99)]


async def test_ten_thousand_children(aapp: App, server_url: str, raw: redis.Redis) -> None:
    @aapp.task
    async def leaf(i: int) -> int:
        return i

    @aapp.task
    def total() -> int:
        return sum(current_job().results())

    with PingProbe(server_url) as adding:
        root = await total.s(children=[leaf.s(i) for i in range(CHILDREN)]).adelay()
    assert await root.astate() == "waiting-children"
    assert raw.scard(f"{aapp.prefix}:default:{root.id}:dependencies") == CHILDREN
    with PingProbe(server_url) as resolving:
        async with running_worker(aapp, concurrency=64, pool="async"):
            assert await root.aresult(timeout=120) == sum(range(CHILDREN))
    for probe in (adding, resolving):
        assert len(probe.latencies_ms) > 20
        assert _p99(probe.latencies_ms) < 25, sorted(probe.latencies_ms)[-5:]
    assert not raw.exists(f"{aapp.prefix}:default:flow-staging")


async def test_large_flow_with_a_taken_id_leaves_nothing(aapp: App, raw: redis.Redis) -> None:
    @aapp.task
    def leaf(i: int) -> int:
        return i

    @aapp.task
    def parent() -> None: ...

    await leaf.options(job_id="taken").adelay(0)
    before = set(raw.scan_iter(match=f"{aapp.prefix}:*"))
    count = ONE_CALL_NODES * 3
    children = [leaf.s(i) for i in range(count)] + [leaf.options(job_id="taken").s(-1)]
    with pytest.raises(ConfigurationError, match="exists already"):
        await aadd_flow(parent.s(children=children))
    after = set(raw.scan_iter(match=f"{aapp.prefix}:*"))
    assert {k for k in after - before if not k.endswith((":id", ":events"))} == set()
    assert raw.llen(f"{aapp.prefix}:default:wait") == 1  # only the job that was there


async def test_abandoned_staging_is_swept_by_the_stalled_check(
    aapp: App, raw: redis.Redis
) -> None:
    @aapp.task
    def leaf(i: int) -> int:
        return i

    broker = aapp.broker()
    base = broker.keys("default").base
    rows = [[base, f"s{i}", leaf.name, "{}", "{}", 0, 0, "", "", "", "0"] for i in range(3)]
    assert await broker.stage_flow("default", "dead", rows) == 0
    assert raw.scard(f"{base}flow:dead") == 3
    raw.zadd(f"{base}flows-staging", {"dead": 1})  # staged long ago, never committed
    assert await broker.check_stalled("default", 1, 10) is not None
    assert not raw.exists(f"{base}flow:dead", f"{base}s0", f"{base}s1")
    assert raw.zcard(f"{base}flows-staging") == 0
