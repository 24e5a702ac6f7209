"""Crash recovery and graceful shutdown, with real worker processes and real signals.

Workers are ``taskflow worker tests.apps.recovery:app`` subprocesses on the server
under test and the test's key prefix, with short locks (1 s) and stalled checks
(every 0.5 s), so a job of a dead worker is back within about two seconds.
Every worker started here is killed by its pid at the end of its test if still alive.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskflow import App, Job, JobFailedError
from tests.apps.recovery import (
    PREFIX_ENV,
    URL_ENV,
    gate_key,
    pids_key,
    register,
    register_flow,
    register_pid_sleep,
    runs_key,
    started_key,
)

REPO = Path(__file__).resolve().parent.parent
TARGET = "tests.apps.recovery:app"
LOCK_MS = 1000
STALLED_MS = 500
STALL_REASON = "job stalled more than allowable limit"
# A job of a dead worker is back after its lock expires (<= LOCK_MS) and two stalled
# checks (STALLED_MS apart): a few seconds at most, with process start-up.
RECOVERY_S = 10.0


def _taskflow_command() -> list[str]:
    script = Path(sys.executable).with_name("taskflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("taskflow")
    assert found, "the taskflow command is not installed"
    return [found]


class WorkerProcess:
    """One ``taskflow worker`` subprocess, its stdout/stderr in files."""

    def __init__(self, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.argv = argv
        self.stderr_path = logs.with_suffix(".stderr")
        self.stdout_path = logs.with_suffix(".stdout")
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)
        self.pid = self.proc.pid
        self.signalled_at: float | None = None

    def signal(self, sig: int) -> None:
        self.signalled_at = time.monotonic()
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (with the worker's log) when it runs on."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout} s; stderr:\n"
                        f"{self.stderr()}")

    def since_signal(self) -> float:
        assert self.signalled_at is not None
        return time.monotonic() - self.signalled_at

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def end(self) -> None:
        """Kill it (by its pid) if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(app: App, server_url: str, prefix: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start worker subprocesses of tests.apps.recovery on this test's server and prefix."""
    started: list[WorkerProcess] = []

    def start(concurrency: int = 1, grace_s: float = 10.0, lock_ms: int = LOCK_MS,
              stalled_ms: int = STALLED_MS, max_stalled: int | None = None) -> WorkerProcess:
        env = dict(os.environ)
        env[URL_ENV] = server_url
        env[PREFIX_ENV] = prefix
        argv = [*_taskflow_command(), "worker", TARGET, "-c", str(concurrency),
                "--lock-ms", str(lock_ms), "--stalled-interval-ms", str(stalled_ms),
                "--grace", str(grace_s)]
        if max_stalled is not None:
            argv += ["--max-stalled", str(max_stalled)]
        worker = WorkerProcess(argv, env, tmp_path / f"worker{len(started)}")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.end()


# -- helpers --------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if worker is not None and worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}) before {what}; stderr:\n"
                        f"{worker.stderr()}")
        if time.monotonic() > deadline:
            log = f"; worker stderr:\n{worker.stderr()}" if worker else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{log}")
        time.sleep(0.02)


def started_count(raw: redis.Redis, prefix: str) -> int:
    return int(raw.llen(started_key(prefix)))


def runs(raw: redis.Redis, prefix: str, job: Job[Any]) -> int:
    return int(raw.hget(runs_key(prefix), job.id) or 0)


def job_fields(raw: redis.Redis, prefix: str, job: Job[Any]) -> dict[str, str]:
    return raw.hgetall(f"{prefix}:{job.queue}:{job.id}")  # type: ignore[return-value]


def events_of(raw: redis.Redis, prefix: str, job: Job[Any]) -> list[str]:
    rows = raw.xrange(f"{prefix}:{job.queue}:events")
    return [fields["event"] for _, fields in rows if fields.get("jobId") == job.id]


def counts(raw: redis.Redis, prefix: str, queue: str = "default") -> dict[str, int]:
    base = f"{prefix}:{queue}:"
    return {"wait": raw.llen(base + "wait"), "active": raw.llen(base + "active"),
            "completed": raw.zcard(base + "completed"), "failed": raw.zcard(base + "failed")}


def stop_gracefully(worker: WorkerProcess) -> str:
    """SIGTERM an idle worker, expect exit code 0, return its stderr."""
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.stderr()
    return worker.stderr()


def assert_recovered_once(raw: redis.Redis, prefix: str, job: Job[Any]) -> None:
    """The job stalled once, was run again and completed exactly once."""
    fields = job_fields(raw, prefix, job)
    events = events_of(raw, prefix, job)
    assert job.state() == "completed"
    assert fields.get("stc") == "1", fields
    assert runs(raw, prefix, job) == 2
    assert events.count("stalled") == 1, events
    assert events.count("completed") == 1, events
    assert "failed" not in events, events


def completes_on_a_new_worker(spawn: Spawn, raw: redis.Redis, prefix: str,
                              job: Job[Any]) -> None:
    """Another worker recovers the job through the stalled check and completes it once."""
    b = spawn()
    result = job.result(timeout=RECOVERY_S)
    assert result["pid"] == b.pid and result["run"] == 2
    assert_recovered_once(raw, prefix, job)
    stop_gracefully(b)


# -- 1. SIGKILL mid-job: the stalled check of another worker recovers the job -----------


def test_sigkill_mid_job_is_recovered_by_another_worker(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    job = sleepy.delay(0.1, "x", first_s=60.0)
    a = spawn()
    wait_until(lambda: started_count(raw, prefix) == 1, 10, "worker A to start the job", a)
    a.proc.send_signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL
    assert job.state() == "active"  # still held by the dead worker

    b = spawn()
    result = job.result(timeout=RECOVERY_S)
    assert result == {"value": "x", "run": 2, "pid": b.pid}
    assert_recovered_once(raw, prefix, job)
    fields = job_fields(raw, prefix, job)
    assert fields["ats"] == "2" and fields["atm"] == "1", fields
    assert f":{b.pid}:" in fields["pb"], fields
    events = events_of(raw, prefix, job)
    assert events.count("active") == 2, events
    assert events.index("stalled") < events.index("completed"), events
    log = stop_gracefully(b)
    assert f"job {job.id} in default stalled; back in the queue" in log


def test_sigkill_with_jobs_in_flight_loses_nothing(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    raw.set(gate_key(prefix), "1")
    jobs = app.add_bulk(sleepy.s(0.2, i, gated=True) for i in range(10))
    a = spawn(concurrency=4)
    wait_until(lambda: started_count(raw, prefix) == 4, 10, "worker A to start 4 jobs", a)
    time.sleep(0.3)  # A takes no more while its 4 are held at the gate
    assert started_count(raw, prefix) == 4
    taken_by_a = set(raw.lrange(started_key(prefix), 0, -1))
    a.proc.send_signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL
    raw.delete(gate_key(prefix))

    b = spawn(concurrency=4)
    results = [job.result(timeout=RECOVERY_S) for job in jobs]
    assert [r["value"] for r in results] == list(range(10))
    assert {r["pid"] for r in results} == {b.pid}
    for job, result in zip(jobs, results, strict=True):
        events = events_of(raw, prefix, job)
        assert events.count("completed") == 1, (job.id, events)
        assert job.state() == "completed"
        if job.id in taken_by_a:
            assert_recovered_once(raw, prefix, job)
            assert result["run"] == 2
        else:
            assert runs(raw, prefix, job) == 1
            assert "stc" not in job_fields(raw, prefix, job)
            assert "stalled" not in events
    assert counts(raw, prefix) == {"wait": 0, "active": 0, "completed": 10, "failed": 0}
    stop_gracefully(b)


# -- 2. stalling more than max_stalled fails the job ------------------------------------


def test_stall_with_max_stalled_zero_fails_the_job(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    job = sleepy.delay(0.1, first_s=60.0)
    a = spawn(max_stalled=0)
    wait_until(lambda: started_count(raw, prefix) == 1, 10, "worker A to start the job", a)
    a.proc.send_signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL

    b = spawn(max_stalled=0)
    with pytest.raises(JobFailedError) as failed:
        job.result(timeout=RECOVERY_S)
    assert failed.value.reason == STALL_REASON
    assert job.state() == "failed"
    assert job.info().failed_reason == STALL_REASON
    assert runs(raw, prefix, job) == 1
    assert job_fields(raw, prefix, job)["stc"] == "1"
    events = events_of(raw, prefix, job)
    assert events.count("failed") == 1 and "stalled" not in events, events
    assert "completed" not in events, events
    assert counts(raw, prefix) == {"wait": 0, "active": 0, "completed": 0, "failed": 1}
    log = stop_gracefully(b)
    assert f"job {job.id} in default stalled too often; failed" in log


def test_job_killed_repeatedly_fails_after_max_stalled(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    """Default max_stalled=1: the first stall is recovered, the second fails the job."""
    sleepy, _ = register(app)
    raw.set(gate_key(prefix), "1")
    job = sleepy.delay(0.1, gated=True)
    for run in (1, 2):
        worker = spawn()
        wait_until(lambda run=run: started_count(raw, prefix) == run, RECOVERY_S,
                   f"run {run} of the job", worker)
        worker.proc.send_signal(signal.SIGKILL)
        assert worker.wait(5) == -signal.SIGKILL

    last = spawn()
    with pytest.raises(JobFailedError) as failed:
        job.result(timeout=RECOVERY_S)
    assert failed.value.reason == STALL_REASON
    assert job.state() == "failed"
    assert runs(raw, prefix, job) == 2
    assert job_fields(raw, prefix, job)["stc"] == "2"
    events = events_of(raw, prefix, job)
    assert events.count("stalled") == 1 and events.count("failed") == 1, events
    assert "completed" not in events, events
    log = stop_gracefully(last)
    assert f"job {job.id} in default stalled too often; failed" in log


def test_stalled_failure_follows_keep_failed(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    """A job failed by the stalled check is kept as its keep_failed says, like any
    failed job (BullMQ's stalled check applies removeOnFail too)."""
    sleepy, _ = register(app)
    job = sleepy.options(keep_failed=False).delay(0.1, first_s=60.0)
    a = spawn(max_stalled=0)
    wait_until(lambda: started_count(raw, prefix) == 1, 10, "worker A to start the job", a)
    a.proc.send_signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL

    b = spawn(max_stalled=0)
    with pytest.raises(JobFailedError) as failed:
        job.result(timeout=RECOVERY_S)  # read from the events stream
    assert failed.value.reason == STALL_REASON
    stop_gracefully(b)
    assert counts(raw, prefix)["failed"] == 0
    assert job_fields(raw, prefix, job) == {}


# -- 3. graceful stop: running jobs finish, waiting jobs stay ---------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn, sig: signal.Signals
) -> None:
    sleepy, _ = register(app)
    jobs = app.add_bulk(sleepy.s(1.0, i) for i in range(4))
    a = spawn(concurrency=2, grace_s=10.0)
    wait_until(lambda: started_count(raw, prefix) == 2, 10, "worker A to start 2 jobs", a)
    running = [job for job in jobs if runs(raw, prefix, job)]
    waiting = [job for job in jobs if job not in running]
    assert len(running) == 2

    a.signal(sig)
    assert a.wait(8) == 0, a.stderr()
    took = a.since_signal()
    assert took < 5.0, f"exit took {took:.1f} s"
    log = a.stderr()
    assert f"{sig.name}: stopping after running jobs" in log
    assert "grace period over" not in log
    assert started_count(raw, prefix) == 2  # took nothing after the signal
    for job in running:
        assert job.state() == "completed"
        assert job.result(timeout=1)["pid"] == a.pid
        assert "stc" not in job_fields(raw, prefix, job)
    for job in waiting:
        assert job.state() == "waiting"
        assert runs(raw, prefix, job) == 0
    assert counts(raw, prefix) == {"wait": 2, "active": 0, "completed": 2, "failed": 0}

    b = spawn(concurrency=2)  # the waiting jobs were not lost
    for job in waiting:
        assert job.result(timeout=RECOVERY_S)["pid"] == b.pid
    stop_gracefully(b)


# -- 4. grace exceeded: the worker exits, the stalled check brings the job back ---------


def test_grace_exceeded_exits_and_job_comes_back(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    grace_s = 1.0
    job = sleepy.delay(0.1, first_s=8.0)
    a = spawn(grace_s=grace_s)
    wait_until(lambda: started_count(raw, prefix) == 1, 10, "worker A to start the job", a)
    a.signal(signal.SIGTERM)
    code = a.wait(12)
    took = a.since_signal()
    log = a.stderr()
    assert code == 0, log
    assert "grace period over: 1 job(s) left to the stalled check" in log
    assert took < grace_s + 2.0, f"worker exited {took:.1f} s after SIGTERM (grace {grace_s} s)"

    completes_on_a_new_worker(spawn, raw, prefix, job)


# -- 5. a second signal exits at once ---------------------------------------------------


def test_second_signal_exits_at_once(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    job = sleepy.delay(0.1, first_s=60.0)
    a = spawn(grace_s=30.0)
    wait_until(lambda: started_count(raw, prefix) == 1, 10, "worker A to start the job", a)
    a.signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM: stopping after running jobs" in a.stderr(), 5,
               "the first SIGTERM to be handled", a)
    a.signal(signal.SIGTERM)
    code = a.wait(5)
    assert code == 128 + signal.SIGTERM, a.stderr()
    assert a.since_signal() < 2.0
    assert "second SIGTERM: exiting now" in a.stderr()
    assert job.state() == "active"  # left to the stalled check

    completes_on_a_new_worker(spawn, raw, prefix, job)


# -- 6. one log line per job outcome ----------------------------------------------------


def test_worker_logs_one_line_per_outcome(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, boom = register(app)
    ok = sleepy.delay(0.05, "fine")
    bad = boom.delay("kaboom")
    twice = boom.options(attempts=2).delay("again")
    a = spawn(concurrency=2)
    assert ok.result(timeout=10)["value"] == "fine"
    for job, message in ((bad, "kaboom"), (twice, "again")):
        with pytest.raises(JobFailedError) as failed:
            job.result(timeout=10)
        assert failed.value.reason == f"ValueError: {message}"
    log = stop_gracefully(a)

    def lines_of(job: Job[Any]) -> list[str]:
        return [line for line in log.splitlines() if f" {job.id}:{job.name} " in line]

    # "<elapsed>s <mark> <id>:<task> <outcome>", whatever the mark between them.
    elapsed = r"\s*\d+\.\d\ds \S+"
    [line] = lines_of(ok)
    assert re.search(rf"INFO\s+taskflow\.worker: {elapsed} {ok.id}:recovery\.sleepy completed$",
                     line), line
    [line] = lines_of(bad)
    assert re.search(rf"INFO\s+taskflow\.worker: {elapsed} {bad.id}:recovery\.boom "
                     r"failed: ValueError: kaboom$", line), line
    retried, ended = lines_of(twice)
    assert re.search(rf"{elapsed} {twice.id}:recovery\.boom retrying: ValueError: again$",
                     retried), retried
    assert re.search(rf"{elapsed} {twice.id}:recovery\.boom failed: ValueError: again$",
                     ended), ended


# -- 7. Flows: a worker killed while running a child; the parent still completes once ----


def test_sigkill_during_a_child_still_completes_the_parent_once(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    sleepy, _ = register(app)
    collect = register_flow(app)
    children = [sleepy.s(0.05, i, first_s=60.0 if i == 0 else None) for i in range(3)]
    root = collect.s("tree", children=children).delay()
    a = spawn(concurrency=3)
    wait_until(lambda: started_count(raw, prefix) >= 3, 10, "worker A to start the children", a)
    wait_until(lambda: raw.scard(f"{prefix}:default:{root.id}:dependencies") == 1, 10,
               "the quick children to complete", a)
    a.proc.send_signal(signal.SIGKILL)
    a.wait(5)
    spawn()
    result = root.result(timeout=RECOVERY_S)
    assert result["label"] == "tree"
    assert [r["value"] for r in result["results"]] == [0, 1, 2]
    assert runs(raw, prefix, root) == 1
    assert events_of(raw, prefix, root).count("completed") == 1
    assert runs(raw, prefix, root.children[0]) == 2


# -- 8. The process pool: a killed worker takes its children with it ----------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_children_end_with_a_killed_worker_so_no_job_runs_twice(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    pid_sleep = register_pid_sleep(app)
    pid_sleep.delay(30)
    a = spawn()
    wait_until(lambda: raw.llen(pids_key(prefix)) == 1, 20, "the child to start the job", a)
    child = int(raw.lindex(pids_key(prefix), 0) or 0)
    a.proc.send_signal(signal.SIGKILL)
    a.wait(5)
    wait_until(lambda: not _alive(child), 5, "the orphaned child to end")


def test_ctrl_c_to_the_process_group_lets_child_jobs_finish(
    app: App, raw: redis.Redis, prefix: str, spawn: Spawn
) -> None:
    pid_sleep = register_pid_sleep(app)
    job = pid_sleep.delay(1.5)
    a = spawn()
    wait_until(lambda: raw.llen(pids_key(prefix)) == 1, 20, "the child to start the job", a)
    child = int(raw.lindex(pids_key(prefix), 0) or 0)
    # A terminal's Ctrl-C reaches every process of the group: the worker and its child.
    a.signal(signal.SIGINT)
    os.kill(child, signal.SIGINT)
    assert a.wait(20) == 0, a.stderr()
    assert job.result(timeout=5) == child
