"""Job schedulers: run times across DST, exactly one job per run, upserts, the server's clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner

from taskflow import App, ConfigurationError, SchedulerInfo, current_job
from taskflow.cli import main
from taskflow.schedule import Timing, next_cron_time, slot_of
from tests.conftest import running_worker

pytestmark = pytest.mark.anyio


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _ms(moment: datetime | None) -> int:
    assert moment is not None
    return round(moment.timestamp() * 1000)


def _runs(pattern: str, tz: str, after_utc: str, count: int) -> list[str]:
    """The next ``count`` runs after a fixed instant, as UTC ``MM-DD HH:MM:SS``."""
    zone, moment, found = ZoneInfo(tz), _utc(after_utc), []
    for _ in range(count):
        following = next_cron_time(pattern, zone, moment)
        assert following is not None
        assert following > moment
        found.append(following.astimezone(UTC).strftime("%m-%d %H:%M:%S"))
        moment = following
    return found


# -- run times: pure, with fixed clocks ------------------------------------------------------


@pytest.mark.parametrize(("pattern", "tz", "after", "expected"), [
    # Fall back, 2024-11-03: 01:00-02:00 EDT, then again as EST. 01:30 runs once (EDT).
    ("30 1 * * *", "America/New_York", "2024-11-02T12:00",
     ["11-03 05:30:00", "11-04 06:30:00", "11-05 06:30:00"]),
    # ... also when asked from inside the repeated hour (01:10 EST).
    ("30 1 * * *", "America/New_York", "2024-11-03T06:10", ["11-04 06:30:00"]),
    # Hourly keeps :00 local; the repeated 01:00 (EST) does not run again.
    ("0 * * * *", "America/New_York", "2024-11-03T03:30",
     ["11-03 04:00:00", "11-03 05:00:00", "11-03 07:00:00", "11-03 08:00:00"]),
    # Spring forward, 2024-03-10: 02:30 does not exist; it runs as the clocks jump (03:00).
    ("30 2 * * *", "America/New_York", "2024-03-09T12:00",
     ["03-10 07:00:00", "03-11 06:30:00"]),
    # A daily time outside the change keeps its wall-clock time: 09:00 EST, then EDT.
    ("0 9 * * *", "America/New_York", "2024-03-09T00:00",
     ["03-09 14:00:00", "03-10 13:00:00", "03-11 13:00:00"]),
    # Berlin, fall back 2024-10-27: 02:00-03:00 repeats; 02:30 runs once (CEST).
    ("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00",
     ["10-27 00:30:00", "10-28 01:30:00"]),
    ("0 * * * *", "Europe/Berlin", "2024-10-26T23:30",
     ["10-27 00:00:00", "10-27 02:00:00", "10-27 03:00:00"]),
    # Berlin, spring forward 2024-03-31: 02:30 runs at 03:00 CEST.
    ("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00", ["03-31 01:00:00", "04-01 00:30:00"]),
    # Several nonexistent times (6 fields, seconds first) merge into the one jump.
    ("*/20 30 2 * * *", "Europe/Berlin", "2024-03-31T00:59:30",
     ["03-31 01:00:00", "04-01 00:30:00", "04-01 00:30:20"]),
    ("0 6 * * MON", "Europe/Berlin", "2024-03-20T00:00", ["03-25 05:00:00", "04-01 04:00:00"]),
    # Lord Howe, a 30-minute shift. Fall back 2024-04-07: 01:30-02:00 repeats.
    ("45 1 * * *", "Australia/Lord_Howe", "2024-04-06T00:00",
     ["04-06 14:45:00", "04-07 15:15:00", "04-08 15:15:00"]),
    ("0,30 * * * *", "Australia/Lord_Howe", "2024-04-06T13:50",
     ["04-06 14:00:00", "04-06 14:30:00", "04-06 15:30:00", "04-06 16:00:00"]),
    # Spring forward 2024-10-06: 02:00-02:30 does not exist; 02:15 runs at the jump.
    ("15 2 * * *", "Australia/Lord_Howe", "2024-10-05T00:00",
     ["10-05 15:30:00", "10-06 15:15:00"]),
    ("0 * * * *", "Australia/Lord_Howe", "2024-10-05T14:00",
     ["10-05 14:30:00", "10-05 15:30:00", "10-05 16:00:00"]),
])
def test_cron_runs_across_dst(pattern: str, tz: str, after: str, expected: list[str]) -> None:
    assert _runs(pattern, tz, after, len(expected)) == expected


@pytest.mark.parametrize(("tz", "fall_back"), [
    ("America/New_York", "2024-11-03"), ("Europe/Berlin", "2024-10-27"),
    ("Australia/Lord_Howe", "2024-04-07"),
])
def test_daily_and_hourly_keep_wall_clock(tz: str, fall_back: str) -> None:
    zone = ZoneInfo(tz)
    moment = _utc("2024-01-01T00:00")
    seen: list[datetime] = []
    for _ in range(366):
        following = next_cron_time("15 7 * * *", zone, moment)
        assert following is not None
        seen.append(following)
        moment = following
    assert {(d.hour, d.minute) for d in seen} == {(7, 15)}
    assert len({d.date() for d in seen}) == 366  # one a day, none twice
    # Hourly over the five local days around the fall-back: once per wall-clock hour.
    first_day = datetime.fromisoformat(fall_back) - timedelta(days=2)
    moment = first_day.replace(tzinfo=zone) - timedelta(seconds=1)
    walls: list[datetime] = []
    while len(walls) < 24 * 5:
        following = next_cron_time("0 * * * *", zone, moment)
        assert following is not None and following > moment
        walls.append(following.replace(tzinfo=None))
        moment = following
    assert walls == [first_day + timedelta(hours=h) for h in range(24 * 5)]


def test_every_keeps_its_phase_and_skips_missed_runs() -> None:
    timing = Timing(every_ms=1000, offset_ms=250)
    assert timing.next_after(10_000) == 10_250
    assert timing.next_after(10_250) == 11_250
    assert timing.next_after(99_999) == 100_250  # long after: the next, not the missed ones
    started = Timing(every_ms=60_000, offset_ms=5_000, start_ms=3_605_000, end_ms=3_725_000)
    assert started.next_after(0) == 3_605_000
    assert started.next_after(3_605_000) == 3_665_000
    assert started.next_after(3_725_000) is None
    assert slot_of("repeat:a.b#1:1700000000123", "a.b#1") == 1_700_000_000_123
    assert slot_of("repeat:other:17", "a") is None


# -- refused at schedule(), nothing written --------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"cron": "61 * * * *"}, "not a cron pattern"),
    ({"cron": "* * *"}, "5 fields"),
    ({"cron": "0 6 * * FUNDAY"}, "not a cron pattern"),
    ({"cron": "0 0 30 2 *"}, "never runs"),
    ({"cron": "0 6 * * *", "tz": "Mars/Olympus_Mons"}, "unknown time zone"),
    ({"every": 0}, "every must be"),
    ({"every": -5}, "every must be"),
    ({"every": timedelta(0)}, "every must be"),
    ({"every": float("nan")}, "every must be"),
    ({"cron": "0 6 * * *", "every": 60}, "exactly one"),
    ({}, "exactly one"),
    ({"every": 60, "tz": "Europe/Berlin"}, "tz= applies to cron"),
    ({"every": 60, "limit": 0}, "limit"),
    ({"every": 60, "id": "a:b"}, "may not contain ':'"),
    ({"every": 60, "job_options": {"job_id": "x"}}, "not allowed"),
    ({"every": 60, "job_options": {"priority": -1}}, "priority"),
    ({"every": 60, "start": datetime(2030, 1, 2, tzinfo=UTC),
      "end": datetime(2030, 1, 1, tzinfo=UTC)}, "end must come after"),
    ({"every": 60, "end": datetime(2001, 1, 1, tzinfo=UTC)}, "never run"),
])
def test_bad_schedules_are_refused_and_write_nothing(
    app: App, raw: redis.Redis, prefix: str, options: dict[str, Any], message: str,
) -> None:
    @app.task
    def report(n: int = 0) -> None:
        return None

    with pytest.raises(ConfigurationError, match=message):
        report.schedule(**options)
    assert list(raw.scan_iter(match=f"{prefix}:*")) == []


def test_wrong_arguments_raise_type_error(app: App, raw: redis.Redis, prefix: str) -> None:
    @app.task
    def report(n: int) -> None:
        return None

    with pytest.raises(TypeError):
        report.schedule(every=60, args=(1, 2))
    with pytest.raises(TypeError, match="unknown option"):
        report.schedule(every=60, args=(1,), cronn="x")  # type: ignore[call-arg]
    assert list(raw.scan_iter(match=f"{prefix}:*")) == []


# -- upserts ----------------------------------------------------------------------------------


async def test_upsert_is_idempotent_then_updates(aapp: App, raw: redis.Redis, prefix: str) -> None:
    @aapp.task
    def report(region: str) -> None:
        return None

    first = await report.aschedule(cron="0 6 * * MON", tz="Europe/Berlin", args=("eu",))
    scheduler_key = f"{prefix}:default:repeat:{first.id}"
    stored, events = raw.hgetall(scheduler_key), raw.xlen(f"{prefix}:default:events")
    again = await report.aschedule(cron="0 6 * * MON", tz="Europe/Berlin", args=("eu",))
    assert again == first
    assert raw.hgetall(scheduler_key) == stored
    assert raw.xlen(f"{prefix}:default:events") == events  # the second call wrote nothing
    assert first.id.startswith(report.name + "#") and first.iterations == 1
    assert first.next_run is not None and first.next_run.weekday() == 0
    assert (first.next_run.hour, first.next_run.minute) == (6, 0)
    assert stored["pattern"] == "0 6 * * MON" and stored["tz"] == "Europe/Berlin"
    assert json.loads(stored["data"]) == {"region": "eu"}

    # Other arguments, same default id rule: a second scheduler, the first untouched.
    other = await report.aschedule(cron="0 6 * * MON", tz="Europe/Berlin", args=("us",))
    assert other.id != first.id
    # A new pattern under an explicit id: updated in place, its delayed job replaced.
    named = await report.aschedule(cron="0 6 * * MON", args=("eu",), id="weekly-eu")
    moved = await report.aschedule(cron="30 7 * * *", args=("eu",), id="weekly-eu",
                                   job_options={"priority": 3, "attempts": 2})
    assert moved.id == named.id and moved.cron == "30 7 * * *" and moved.tz == "UTC"
    assert moved.next_run != named.next_run and moved.opts["priority"] == 3
    assert sorted(s.id for s in await aapp.schedulers().alist()) == sorted(
        [first.id, other.id, "weekly-eu"])
    delayed = raw.zrange(f"{prefix}:default:delayed", 0, -1)
    assert len(delayed) == 3 and f"repeat:weekly-eu:{_ms(named.next_run)}" not in delayed
    job = raw.hgetall(f"{prefix}:default:{delayed[0]}")
    assert job["rjk"] in {first.id, other.id, "weekly-eu"}
    new_job = raw.hgetall(f"{prefix}:default:repeat:weekly-eu:{_ms(moved.next_run)}")
    assert new_job["priority"] == "3" and json.loads(new_job["opts"])["attempts"] == 2


async def test_concurrent_upserts_make_one_scheduler(aapp: App, raw: redis.Redis,
                                                     prefix: str) -> None:
    @aapp.task
    def tick() -> None:
        return None

    made = await asyncio.gather(*(tick.aschedule(every=30) for _ in range(12)))
    assert len({(m.id, m.next_run) for m in made}) == 1
    assert raw.zcard(f"{prefix}:default:repeat") == 1
    assert raw.zcard(f"{prefix}:default:delayed") == 1
    assert raw.hget(f"{prefix}:default:repeat:{made[0].id}", "ic") == "1"


# -- the server's clock ----------------------------------------------------------------------


async def test_due_times_follow_the_server_clock(
    aapp: App, raw: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    @aapp.task
    def tick() -> None:
        return None

    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # the producer is an hour ahead
    interval = await tick.aschedule(every=60, id="interval")
    minutely = await tick.aschedule(cron="* * * * *", id="minutely")
    seconds, micros = raw.time()
    server_ms = seconds * 1000 + micros // 1000
    for info, most_ms in ((interval, 60_000), (minutely, 60_000)):
        assert info.next_run is not None
        due_ms = info.next_run.timestamp() * 1000
        assert server_ms - 2000 < due_ms <= server_ms + most_ms + 2000
        job_id = f"repeat:{info.id}:{due_ms:.0f}"
        score = raw.zscore(f"{prefix}:default:delayed", job_id)
        assert score is not None and int(score) // 4096 == int(due_ms)


# -- on real workers --------------------------------------------------------------------------


def _made(raw: redis.Redis, prefix: str, scheduler_id: str) -> dict[int, dict[str, str]]:
    """Every job a scheduler made, by run."""
    head = f"{prefix}:default:repeat:{scheduler_id}:"
    return {int(key[len(head):]): raw.hgetall(key)
            for key in raw.scan_iter(match=head + "*") if key[len(head):].isdigit()}


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_exactly_one_job_per_run_with_four_workers_and_racing_upserts(
    aapp: App, raw: redis.Redis, prefix: str, server_url: str,
) -> None:
    runs: list[str] = []
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            runs.append(current_job().id)

    # Four workers as four processes would be: an app (and connections) each.
    producer = aapp.task(name="tick")(tick)
    worker_apps = [App(f"worker-{i}", server_url, prefix=prefix) for i in range(4)]
    for worker_app in worker_apps:
        worker_app.task(name="tick")(tick)

    def upserts() -> Any:
        return asyncio.gather(*(producer.aschedule(every=0.2) for _ in range(4)))

    scheduler_id = (await upserts())[0].id
    async with contextlib.AsyncExitStack() as stack:
        for worker_app in worker_apps:
            await stack.enter_async_context(running_worker(worker_app, concurrency=4))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            await upserts()
            await asyncio.sleep(0.03)

    assert len(runs) == len(set(runs)) >= 5
    slots = sorted(s for s in (slot_of(r, scheduler_id) for r in runs) if s is not None)
    assert len(slots) == len(runs)
    assert all((b - a) % 200 == 0 and b > a for a, b in itertools.pairwise(slots))
    made = _made(raw, prefix, scheduler_id)
    assert set(slots) <= set(made)
    assert int(raw.hget(f"{prefix}:default:repeat:{scheduler_id}", "ic") or 0) == len(made)
    waiting = [slot for slot, job in made.items() if "processedOn" not in job]
    assert len(waiting) == 1 and waiting[0] > slots[-1]


async def test_after_downtime_the_overdue_run_runs_once(
    aapp: App, raw: redis.Redis, prefix: str,
) -> None:
    runs: list[str] = []

    @aapp.task
    async def tick() -> None:
        runs.append(current_job().id)

    info = await tick.aschedule(every=0.2)
    await asyncio.sleep(1.0)  # four runs pass with no worker
    seconds, micros = raw.time()
    back_ms = seconds * 1000 + micros // 1000
    async with running_worker(aapp):
        await _until(lambda: len(runs) >= 3)
    slots = [slot_of(r, info.id) or 0 for r in runs]
    assert slots[0] < back_ms - 600  # the overdue run, once
    assert slots[1] > back_ms  # then the first run after now: none replayed
    assert slots[2] - slots[1] == 200 and (slots[1] - slots[0]) % 200 == 0


async def test_limit_finishes_and_stays_finished(aapp: App, raw: redis.Redis,
                                                 prefix: str) -> None:
    runs: list[str] = []

    @aapp.task
    async def tick() -> None:
        runs.append(current_job().id)

    info = await tick.aschedule(every=0.1, limit=3, immediately=True)
    async with running_worker(aapp):
        await _until(lambda: len(runs) == 3)
        await asyncio.sleep(0.3)
        finished = await aapp.schedulers().aget(info.id)
        assert finished is not None and finished.next_run is None
        assert finished.iterations == 3 and finished.limit == 3
        again = await tick.aschedule(every=0.1, limit=3, immediately=True)  # next app start
        assert again.next_run is None
        await asyncio.sleep(0.3)
    assert len(runs) == 3
    assert await aapp.schedulers().alist() == []
    assert raw.zcard(f"{prefix}:default:delayed") == 0


async def test_a_crash_before_moving_on_heals(aapp: App, raw: redis.Redis, prefix: str) -> None:
    runs: list[str] = []

    @aapp.task
    async def tick() -> None:
        runs.append(current_job().id)

    broker = aapp.broker()

    async def take_and_crash(scheduler_id: str) -> SchedulerInfo:
        info = await tick.aschedule(every=30, immediately=True, id=scheduler_id)
        taken = await broker.finish_fetch("default", "crashed", 100, 1, "crashed", [])
        assert [job_id for job_id, _ in taken.jobs] == [
            f"repeat:{scheduler_id}:{_ms(info.next_run)}"]
        return info

    # The next schedule() call (an app start) places the missing run.
    first = await take_and_crash("heal-a")
    healed = await tick.aschedule(every=30, immediately=True, id="heal-a")
    assert healed.iterations == 2 and _ms(healed.next_run) == _ms(first.next_run) + 30_000
    # The stalled check gives the job to a worker, which runs it and moves on; the
    # re-run of heal-a's job (moved on already) moves nothing.
    second = await take_and_crash("heal-b")
    await asyncio.sleep(0.15)
    async with running_worker(aapp, stalled_interval_ms=100):
        await _until(lambda: len(runs) == 2)
    after = await aapp.schedulers().aget("heal-b")
    assert after is not None and after.iterations == 2
    assert _ms(after.next_run) == _ms(second.next_run) + 30_000
    assert (await aapp.schedulers().aget("heal-a")) == healed
    assert len(_made(raw, prefix, "heal-a")) == len(_made(raw, prefix, "heal-b")) == 2


# -- reading and removing, from Python and the CLI -------------------------------------------


def test_list_show_remove(app: App, server_url: str, prefix: str, raw: redis.Redis) -> None:
    @app.task
    def report(region: str) -> None:
        return None

    start = datetime(2031, 1, 1, 8, 0)
    report.schedule(cron="0 9 * * *", tz="America/New_York", args=("us",), id="daily-us",
                    start=start, limit=10)
    report.schedule(every=timedelta(minutes=5), args=("eu",), id="five-eu")
    listed = app.schedulers().list()
    assert [s.id for s in listed] == ["five-eu", "daily-us"]  # soonest first
    daily = app.schedulers().get("daily-us")
    assert daily is not None and daily.start == start.replace(tzinfo=ZoneInfo("America/New_York"))
    assert daily.next_run == datetime(2031, 1, 1, 9, 0, tzinfo=ZoneInfo("America/New_York"))

    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, ["--url", server_url, "--prefix", prefix, *args],
                             catch_exceptions=False)

    table = cli("schedules", "list")
    assert table.exit_code == 0
    assert "daily-us" in table.output and "2031-01-01T09:00:00-05:00" in table.output
    assert "cron 0 9 * * * America/New_York" in table.output and "every 300s" in table.output
    as_json = json.loads(cli("schedules", "list", "--json").output)
    assert [row["id"] for row in as_json] == ["five-eu", "daily-us"]
    shown = cli("schedules", "show", "daily-us")
    assert shown.exit_code == 0 and "runs:      1 of 10" in shown.output
    assert cli("schedules", "remove", "daily-us").exit_code == 0
    assert cli("schedules", "remove", "daily-us").exit_code == 3
    assert cli("schedules", "show", "daily-us").exit_code == 3
    assert [s.id for s in app.schedulers().list()] == ["five-eu"]
    assert app.schedulers().remove("five-eu") and app.schedulers().list() == []
    assert raw.zcard(f"{prefix}:default:delayed") == 0
