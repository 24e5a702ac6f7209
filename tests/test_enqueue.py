"""Queuing jobs: argument binding, options, bad input, sync and async calls, bulk."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
import redis

import taskflow
from taskflow import App, Backoff, ConfigurationError, EncodeError, Keep


def _tasks(app: App) -> tuple[taskflow.Task, taskflow.Task]:  # type: ignore[type-arg]
    @app.task
    def send(order_id: int, email: str, *, cc: list[str] | None = None) -> str:
        return f"{order_id}:{email}"

    @app.task(queue="emails", attempts=3, backoff=("exponential", 1.0), priority=5)
    async def resize(path: str, width: int = 800) -> dict[str, object]:
        return {"path": path, "width": width}

    return send, resize


def test_data_is_an_object_of_parameter_names(app: App, raw: redis.Redis) -> None:
    send, _ = _tasks(app)
    job = send.delay(42, email="a@b.c", cc=["d@e.f"])
    stored = raw.hgetall(f"{app.prefix}:default:{job.id}")
    assert json.loads(stored["data"]) == {"order_id": 42, "email": "a@b.c", "cc": ["d@e.f"]}
    assert stored["name"] == send.name == f"{__name__}._tasks.<locals>.send"
    assert raw.lrange(f"{app.prefix}:default:wait", 0, -1) == [job.id]


def test_task_options_are_stored_under_bullmq_names(app: App, raw: redis.Redis) -> None:
    _, resize = _tasks(app)
    job = resize.delay("a.png")
    opts = json.loads(raw.hget(f"{app.prefix}:emails:{job.id}", "opts"))
    assert opts["attempts"] == 3
    assert opts["backoff"] == {"type": "exponential", "delay": 1000}
    assert opts["priority"] == 5
    assert raw.zcard(f"{app.prefix}:emails:prioritized") == 1
    assert job.queue == "emails"


def test_wrong_arguments_raise_type_error_and_write_nothing(app: App, raw: redis.Redis) -> None:
    send, _ = _tasks(app)
    with pytest.raises(TypeError):
        send.delay(1, 2, 3)
    with pytest.raises(TypeError):
        send.delay(order_id=1)
    with pytest.raises(TypeError):
        send.delay(1, "x", bogus=True)
    assert list(raw.scan_iter(match=f"{app.prefix}:*")) == []


def test_unencodable_arguments_raise_encode_error_and_write_nothing(
    app: App, raw: redis.Redis
) -> None:
    send, _ = _tasks(app)
    with pytest.raises(EncodeError, match="arguments of"):
        send.delay(1, email=object())  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        send.delay(2**70, "a@b.c")
    with pytest.raises(EncodeError):
        app.add_bulk([send.s(1, "ok"), send.s(2, email={1: "non-string key"})])  # type: ignore
    assert list(raw.scan_iter(match=f"{app.prefix}:*")) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("delay_s", -1), ("delay_s", math.inf), ("priority", -1), ("priority", 2**21),
        ("priority", 1.5), ("attempts", 0), ("job_id", "12"), ("job_id", "a:b"),
        ("job_id", ""), ("backoff", "soon"), ("backoff", ("linear", 1.0)),
        ("backoff", ("fixed", 1.0, 2.0)), ("keep_completed", -3), ("keep_completed", "x"),
        ("bogus", 1),
    ],
)
def test_bad_option_values_are_refused_at_the_call(
    app: App, raw: redis.Redis, option: str, value: object
) -> None:
    send, _ = _tasks(app)
    with pytest.raises(ConfigurationError):
        send.options(**{option: value}).delay(1, "a@b.c")
    assert list(raw.scan_iter(match=f"{app.prefix}:*")) == []


def test_bad_task_options_are_refused_at_decoration(app: App) -> None:
    with pytest.raises(ConfigurationError):
        app.task(attempts=-1)(lambda: None)
    with pytest.raises(ConfigurationError):
        app.task(queue="a:b")(lambda: None)


def test_bad_broker_url_is_refused_at_app_creation() -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        App("x", "http://localhost:6379")


def test_custom_job_id_adds_once(app: App, raw: redis.Redis) -> None:
    send, _ = _tasks(app)
    first = send.options(job_id="order-42").delay(42, "a@b.c")
    again = send.options(job_id="order-42").delay(99, "other@b.c")
    assert first.id == again.id == "order-42"
    assert raw.llen(f"{app.prefix}:default:wait") == 1
    data = json.loads(raw.hget(f"{app.prefix}:default:order-42", "data"))
    assert data["order_id"] == 42
    events = [f["event"] for _, f in raw.xrange(f"{app.prefix}:default:events")]
    assert events.count("duplicated") == 1


def test_delay_priority_lifo_land_in_their_lists(app: App, raw: redis.Redis) -> None:
    send, _ = _tasks(app)
    base = f"{app.prefix}:default"
    delayed = send.options(delay_s=timedelta(seconds=60)).delay(1, "a")
    send.options(priority=3).delay(2, "b")
    send.delay(3, "c")
    lifo = send.options(lifo=True).delay(4, "d")
    assert raw.zcard(f"{base}:delayed") == 1
    due_ms = int(raw.zscore(f"{base}:delayed", delayed.id)) // 4096
    created_ms = int(raw.hget(f"{base}:{delayed.id}", "timestamp"))
    assert due_ms == created_ms + 60_000
    assert raw.zcard(f"{base}:prioritized") == 1
    assert raw.lindex(f"{base}:wait", -1) == lifo.id  # the end workers take from
    assert delayed.state() == "delayed"


@pytest.mark.anyio
async def test_async_enqueue(aapp: App, raw: redis.Redis) -> None:
    app = aapp
    _, resize = _tasks(app)
    job = await resize.adelay("b.png", width=10)
    assert await job.astate() == "waiting"
    info = await job.ainfo()
    assert info.data == {"path": "b.png", "width": 10}
    assert info.name == resize.name


def test_bulk_add_keeps_order_and_spans_queues(app: App, raw: redis.Redis) -> None:
    send, resize = _tasks(app)
    sigs = [send.s(i, f"{i}@x") for i in range(2500)] + [resize.s("p.png")]
    jobs = app.add_bulk(sigs)
    assert [j.queue for j in jobs[:2]] == ["default", "default"]
    assert jobs[-1].queue == "emails"
    assert [int(j.id) for j in jobs[:2500]] == list(range(1, 2501))
    # FIFO: the oldest job sits at the taking end of the list
    assert raw.lindex(f"{app.prefix}:default:wait", -1) == jobs[0].id
    assert raw.llen(f"{app.prefix}:default:wait") == 2500


def test_keep_parsing() -> None:
    assert Keep.parse(True) == Keep()
    assert Keep.parse(False) == Keep(count=0)
    assert Keep.parse(5) == Keep(count=5)
    assert Keep.parse(timedelta(hours=1)) == Keep(age_s=3600.0)
    assert Keep(count=0).to_bullmq() is True
    assert Keep().to_bullmq() is False
    assert Keep(count=7, age_s=60).to_bullmq() == {"count": 7, "age": 60}


def test_backoff_waits() -> None:
    assert Backoff("fixed", 2.0).wait_ms(5) == 2000
    exp = Backoff("exponential", 1.0)
    assert [exp.wait_ms(n) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    jittered = Backoff("exponential", 1.0, jitter=0.5)
    assert all(2000 <= jittered.wait_ms(3) <= 4000 for _ in range(200))


def test_public_names_are_all_exported() -> None:
    public = {n for n in dir(taskflow) if not n.startswith("_")}
    modules = {"app", "backends", "cli", "control", "errors", "events", "executors", "flows",
               "job", "keys", "metrics", "options", "pool", "queue", "schedule", "scripts",
               "task", "worker"}
    assert public - modules - {"annotations"} <= set(taskflow.__all__)
    for name in taskflow.__all__:
        assert hasattr(taskflow, name)
