"""Properties: the argument encoders round-trip, and jobs are taken in the layout's order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflow import App
from taskflow.backends.base import NewJob
from taskflow.backends.redis import RedisBroker

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

probe = App("properties", "redis://127.0.0.1:1/0")


@probe.task
def shaped(a: Any, /, b: Any, *rest: Any, c: Any = None, **extra: Any) -> Any:
    return (a, b, rest, c, extra)


@given(a=json_values, b=json_values, rest=st.lists(json_values, max_size=3),
       c=json_values, extra=st.dictionaries(st.from_regex(r"[x-z]{1,3}", fullmatch=True),
                                            json_values, max_size=3))
def test_arguments_round_trip_through_job_data(
    a: Any, b: Any, rest: list[Any], c: Any, extra: dict[str, Any]
) -> None:
    data = shaped.encode_args((a, b, *rest), {"c": c, **extra})
    from taskflow import _json

    args, kwargs = shaped.decode_args(_json.loads(data))
    assert shaped.fn(*args, **kwargs) == (a, b, tuple(rest), c, extra)


# A job to add: (priority, lifo, delayed)
job_specs = st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=25)


def _expected_order(specs: list[tuple[int, bool]]) -> list[int]:
    """The layout's rule: wait (FIFO, LIFO jobs at the taking end) before prioritized
    (lowest priority first, FIFO within a priority)."""
    wait: list[int] = []
    for index, (priority, lifo) in enumerate(specs):
        if priority == 0:
            if lifo:
                wait.insert(0, index)
            else:
                wait.append(index)
    prioritized = sorted((p, i) for i, (p, _) in enumerate(specs) if p > 0)
    return wait + [i for _, i in prioritized]


async def _take_all(url: str, specs: list[tuple[int, bool]]) -> list[int]:
    prefix = f"prop{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url, prefix)
    try:
        jobs = [NewJob("t", str(i), "{}", priority=p, lifo=lifo)
                for i, (p, lifo) in enumerate(specs)]
        half = len(jobs) // 2  # two calls: order must hold across bulk calls too
        await broker.add_jobs("q", jobs[:half])
        await broker.add_jobs("q", jobs[half:])
        taken = await broker.finish_fetch("q", "tok", 10_000, len(specs) + 5, "w", [])
        return [int(fields["data"]) for _, fields in taken.jobs]
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        await broker.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=job_specs)
def test_jobs_are_taken_in_layout_order(server_url: str, specs: list[tuple[int, bool]]) -> None:
    assert asyncio.run(_take_all(server_url, specs)) == _expected_order(specs)
