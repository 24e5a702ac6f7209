"""Flows: parent-child trees, failure policies, atomic adds, chain / group / chord."""

from __future__ import annotations

import asyncio

import pytest
import redis

from taskflow import (
    App,
    ConfigurationError,
    JobFailedError,
    chain,
    chord,
    current_job,
    group,
)
from taskflow.flows import aadd_flow
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


def _tasks(app: App):  # type: ignore[no-untyped-def]
    order: list[str] = []

    @app.task(queue="crunch")
    def crunch(part: int) -> int:
        order.append(f"crunch-{part}")
        return part * 10

    @app.task(queue="reports")
    def report(month: str) -> dict[str, object]:
        job = current_job()
        order.append("report")
        return {"month": month, "results": job.results(),
                "by_key": sorted(job.children_results().values())}

    @app.task
    def summarize(label: str) -> dict[str, object]:
        order.append("summarize")
        return {"label": label, "parts": current_job().results()}

    return crunch, report, summarize, order


async def test_nested_tree_across_queues(aapp: App, raw: redis.Redis) -> None:
    crunch, report, summarize, order = _tasks(aapp)
    tree = summarize.s("year", children=[
        report.s(month="2026-10", children=[crunch.s(1), crunch.s(2)]),
        report.s(month="2026-11", children=[crunch.s(3)]),
    ])
    root = await tree.adelay()
    assert [c.queue for c in root.children] == ["reports", "reports"]
    assert [g.queue for g in root.children[0].children] == ["crunch", "crunch"]
    assert await root.astate() == "waiting-children"
    events = [f["event"] for _, f in raw.xrange(f"{aapp.prefix}:reports:events")]
    assert events.count("waiting-children") == 2
    async with running_worker(aapp, queues=["default", "reports", "crunch"], concurrency=4):
        result = await root.aresult(timeout=15)
    assert result == {"label": "year", "parts": [
        {"month": "2026-10", "results": [10, 20], "by_key": [10, 20]},
        {"month": "2026-11", "results": [30], "by_key": [30]},
    ]}
    assert order.index("report") > max(order.index("crunch-1"), order.index("crunch-2"))
    assert order[-1] == "summarize"
    unblocked = [f for _, f in raw.xrange(f"{aapp.prefix}:default:events")
                 if f.get("jobId") == root.id and f["event"] == "waiting"]
    assert unblocked and unblocked[0]["prev"] == "waiting-children"


async def test_chain_group_chord(aapp: App) -> None:
    @aapp.task
    def add(x: int, y: int) -> int:
        return x + y

    @aapp.task
    def total(numbers: list[int], bonus: int = 0) -> int:
        return sum(numbers) + bonus

    steps = await chain(add.s(1, 2), add.s(10), add.s(100)).adelay()
    gathered = await group(add.s(i, i) for i in range(4)).adelay()
    callback = await chord([add.s(i, 1) for i in range(3)], total.s(bonus=1000)).adelay()
    async with running_worker(aapp, concurrency=4):
        assert await steps.aresult(timeout=15) == 113
        assert await gathered.aresults(timeout=15) == [0, 2, 4, 6]
        assert await callback.aresult(timeout=15) == 1006


async def test_default_policy_fails_the_parent_and_late_siblings_do_no_harm(
    aapp: App
) -> None:
    _crunch, report, _, _ = _tasks(aapp)
    release = asyncio.Event()

    @aapp.task(queue="crunch", attempts=1)
    def broken(part: int) -> int:
        raise ValueError(f"part {part} is bad")

    @aapp.task(queue="crunch")
    async def slow(part: int) -> int:
        await release.wait()
        return part

    root = await report.s(month="x", children=[broken.s(1), slow.s(2)]).adelay()
    async with running_worker(aapp, queues=["reports", "crunch"], concurrency=3):
        with pytest.raises(JobFailedError, match="part 1 is bad"):
            await root.aresult(timeout=15)
        release.set()
        assert await root.children[1].aresult(timeout=15) == 2
        await asyncio.sleep(0.2)
    assert await root.astate() == "failed"


@pytest.mark.parametrize("policy", ["continue", "ignore", "remove"])
async def test_policies_that_let_the_parent_run(aapp: App, policy: str) -> None:
    seen: dict[str, object] = {}

    @aapp.task(attempts=1)
    def broken() -> int:
        raise ValueError("bad child")

    @aapp.task
    def fine() -> int:
        return 7

    @aapp.task
    def parent() -> str:
        job = current_job()
        seen.update(results=job.results(), failed=list(job.failed_children().values()))
        return "ran"

    node = parent.s(children=[broken.options(on_failure=policy).s(), fine.s()])
    root = await node.adelay()
    async with running_worker(aapp, concurrency=2):
        assert await root.aresult(timeout=15) == "ran"
    assert seen["results"] in ([None, 7], [None, None])  # continue may run before "fine"
    if policy == "remove":
        assert seen["failed"] == []
    else:
        assert seen["failed"] == ["ValueError: bad child"]
    if policy != "continue":
        assert seen["results"] == [None, 7]


async def test_retried_child_keeps_the_parent_waiting(aapp: App) -> None:
    tries: list[int] = []

    @aapp.task(attempts=3, backoff=0.2)
    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise RuntimeError("again")
        return "finally"

    @aapp.task
    def parent() -> list[object]:
        return current_job().results()

    root = await parent.s(children=[flaky.s()]).adelay()
    async with running_worker(aapp, concurrency=2):
        assert await root.aresult(timeout=15) == ["finally"]
    assert len(tries) == 3


async def test_bad_trees_are_refused_before_anything_is_written(
    aapp: App, raw: redis.Redis
) -> None:
    crunch, report, _, _ = _tasks(aapp)
    shared = crunch.s(1)
    with pytest.raises(ConfigurationError, match="appears twice"):
        await report.s(month="x", children=[shared, shared]).adelay()
    with pytest.raises(ConfigurationError, match="task signature"):
        await report.s(month="x", children=[crunch.s(1), "not a node"]).adelay()
    with pytest.raises(ConfigurationError, match="no task of the app uses"):
        await report.s(month="x", children=[crunch.options(queue="nowhere").s(1)]).adelay()
    with pytest.raises(TypeError):
        await report.s(month="x", children=[crunch.s()]).adelay()
    assert list(raw.scan_iter(match=f"{aapp.prefix}:*")) == []


async def test_a_taken_id_mid_tree_leaves_nothing(aapp: App, raw: redis.Redis) -> None:
    crunch, report, _, _ = _tasks(aapp)
    await crunch.options(job_id="taken").adelay(0)
    before = set(raw.scan_iter(match=f"{aapp.prefix}:*"))
    tree = report.s(month="x", children=[crunch.s(1), crunch.options(job_id="taken").s(2)])
    with pytest.raises(ConfigurationError, match="exists already"):
        await aadd_flow(tree)
    assert set(raw.scan_iter(match=f"{aapp.prefix}:*")) == before


async def test_removing_a_parent_removes_pending_children(aapp: App, raw: redis.Redis) -> None:
    crunch, report, _, _ = _tasks(aapp)
    root = await report.s(month="x", children=[crunch.s(1), crunch.s(2)]).adelay()
    assert await aapp.queue("reports").aremove(root.id) is True
    assert raw.llen(f"{aapp.prefix}:crunch:wait") == 0
    assert not raw.exists(f"{aapp.prefix}:crunch:{root.children[0].id}")


async def test_tree_can_be_read_back(aapp: App) -> None:
    crunch, report, _, _ = _tasks(aapp)
    root = await report.s(month="x", children=[crunch.s(i) for i in range(5)]).adelay()
    tree = await root.atree(max_children=3)
    assert tree.state == "waiting-children"
    assert [c.state for c in tree.children] == ["waiting"] * 3
    assert tree.more_children == 2
    shallow = await root.atree(depth=0)
    assert shallow.children == []


async def test_tree_of_a_parent_without_recorded_order_lists_every_child(
    aapp: App, raw: redis.Redis
) -> None:
    """A parent BullMQ added keeps no order: its children are found in its sets, those
    that failed it (":unsuccessful") included."""
    crunch, report, _, _ = _tasks(aapp)
    root = await report.s(month="x", children=[crunch.s(1), crunch.s(2)]).adelay()
    base = f"{aapp.prefix}:reports:{root.id}"
    failed_child, pending_child = root.children[0], root.children[1]
    raw.hdel(base, "tfc")
    raw.srem(f"{base}:dependencies", failed_child.key)
    raw.hset(f"{base}:unsuccessful", failed_child.key, "boom")
    tree = await root.atree()
    assert {c.job.id for c in tree.children} == {failed_child.id, pending_child.id}
