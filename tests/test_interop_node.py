"""taskflow and Node BullMQ share queues: each side runs the jobs the other added.

What is checked, with Node's Queue, Worker, QueueEvents and Job on one side and
taskflow's App, Worker, Job and Queue on the other:

* Node adds (add, addBulk; attempts + backoff, priority, delay, lifo, jobId,
  removeOnComplete), a taskflow worker runs; results, failures, progress, logs,
  order of taking and the events agree on both sides.
* taskflow adds (delay, options, add_bulk), a Node worker runs; Node sees the
  name, data and options taskflow wrote; taskflow sees results and failures.
* Both kinds of worker on one queue: each job runs once; each lists the other.
* Pause from either side holds the other side's worker; the global concurrency
  and rate limit set from Node hold a taskflow worker.
* Counts agree (Node's getJobCounts, taskflow's Queue.counts).
* Flows: a FlowProducer tree (nested, two queues, failParentOnFailure,
  ignoreDependencyOnFailure) run by taskflow workers; taskflow flows (nested,
  chord, chain, each on_failure policy, a staged large one) run by Node workers,
  ending as under taskflow's; trees split between the two kinds of worker. Each
  side reads the other's children values, failures and dependencies.

The Node side is npm ``bullmq`` and ``ioredis`` at the versions pinned in
``tests/node/package.json``, installed once into a cache folder keyed by those
versions (``$TASKFLOW_TEST_NODE_CACHE``, else ``$XDG_CACHE_HOME`` or
``~/.cache``, then ``taskflow-tests/node``) and reused by later runs. The
scripts in ``tests/node/`` run as subprocesses and report by printing JSON
lines. Both sides talk to a private redis-server that this module starts on a
free loopback port and stops by its pid at the end of the session.

The tests skip only when ``node`` or ``npm`` is missing; a failed npm install
fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from taskflow import App, JobFailedError, JobNotFoundError, Task, Worker, chain, chord, current_job
from taskflow.backends import embedded
from taskflow.flows import ONE_CALL_NODES

SCRIPTS = Path(__file__).parent / "node"
PACKAGE_JSON = SCRIPTS / "package.json"
NPM_TIMEOUT_S = 100  # under the suite's 120 s per-test timeout, which counts fixture setup
NODE_TIMEOUT_S = 30
RESULT_TIMEOUT_S = 15
QUEUE = "interop"
SIDE = "interop-side"  # a second queue, for flows that span queues
STATES = ("active", "completed", "delayed", "failed", "prioritized", "waiting",
          "waiting-children")


# -- the Node packages ----------------------------------------------------------------


def _cache_root() -> Path:
    override = os.environ.get("TASKFLOW_TEST_NODE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskflow-tests" / "node"


def _installed_versions(folder: Path, names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            meta = json.loads((folder / "node_modules" / name / "package.json").read_text())
            found[name] = meta.get("version")
        except (OSError, ValueError):
            found[name] = None
    return found


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """A folder whose node_modules holds the pinned bullmq and ioredis."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the Node interop tests need `node` and `npm` on PATH")
    npm = shutil.which("npm")
    assert npm is not None
    package_text = PACKAGE_JSON.read_text()
    wanted: dict[str, str] = json.loads(package_text)["dependencies"]
    key = "_".join(f"{name}-{version}" for name, version in sorted(wanted.items()))
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    stamp = folder / ".taskflow-installed"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions install once
        if (stamp.exists() and stamp.read_text() == package_text
                and _installed_versions(folder, list(wanted)) == wanted):
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "package.json").write_text(package_text)
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"], cwd=folder,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm install in {folder} took over {NPM_TIMEOUT_S} s")
        if done.returncode != 0:
            pytest.fail(f"npm install in {folder} failed ({done.returncode}):\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        installed = _installed_versions(folder, list(wanted))
        if installed != wanted:
            pytest.fail(f"npm installed {installed}, wanted {wanted}")
        stamp.write_text(package_text)
    return folder


# -- a private redis-server -----------------------------------------------------------


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a redis-server of our own on 127.0.0.1, stopped by pid at the end."""
    binary = shutil.which("redis-server") or embedded._find_binary()
    if binary is None:
        pytest.fail("the Node interop tests need redis-server (or valkey-server)")
    folder = tmp_path_factory.mktemp("interop-redis")
    for _ in range(5):
        port = _free_port()
        log_path = folder / f"server-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--save", "", "--appendonly", "no",
                 "--bind", "127.0.0.1", "--dir", str(folder)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        ours = False
        try:
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    # the server answering must be this one, not another on a reused port
                    info = cast(dict[str, Any], client.info("server"))
                    ours = int(info["process_id"]) == proc.pid
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        if not ours:
            _stop(proc)  # gone (the port was taken meanwhile) or never ready
            continue
        try:
            yield port
        finally:
            _stop(proc)
        return
    pytest.fail(f"could not start {binary} on a free port; see {folder}")


# -- the app under test ---------------------------------------------------------------


@dataclass
class Interop:
    app: App
    url: str
    port: int
    prefix: str
    node_dir: Path
    add: Task[Any, int]
    flaky: Task[Any, int]
    boom: Task[Any, int]
    slow: Task[Any, int]
    report: Task[Any, int]
    gather: Task[Any, dict[str, Any]]
    total: Task[Any, int]
    seen: dict[str, Any]  # what flow parents run by taskflow saw of their children

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "TF_NODE_DIR": str(self.node_dir), "TF_REDIS_PORT": str(self.port),
                "TF_PREFIX": self.prefix, "TF_QUEUE": QUEUE, **extra}

    def node(self, script: str, *args: str, **extra: str) -> list[dict[str, Any]]:
        """Run a Node script to its end; its JSON lines."""
        try:
            done = subprocess.run(
                ["node", str(SCRIPTS / script), *args], env=self.env(**extra),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=NODE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node {script} ran over {NODE_TIMEOUT_S} s; output: {exc.stdout!r}")
        if done.returncode != 0:
            pytest.fail(f"node {script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def counts(self) -> dict[str, int]:
        """taskflow's counts of the queue."""
        found = self.app.queue(QUEUE).counts()
        return {state: found[state] for state in STATES}

    def node_counts(self) -> dict[str, int]:
        (line,) = self.node("admin.mjs", "counts")
        return {state: line["counts"][state] for state in STATES}


@pytest.fixture
def interop(redis_port: int, node_dir: Path) -> Iterator[Interop]:
    url = f"redis://127.0.0.1:{redis_port}/0"
    prefix = f"tfi{uuid.uuid4().hex[:10]}"
    app = App("interop", url, prefix=prefix, default_queue=QUEUE)

    @app.task(name="interop.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="interop.flaky")
    def flaky(x: int, y: int) -> int:
        if current_job().attempts_made == 0:
            raise RuntimeError("flaky: first attempt fails")
        return x + y

    @app.task(name="interop.boom")
    def boom(x: int, y: int = 0) -> int:
        raise ValueError(f"boom {x}")

    @app.task(name="interop.slow")
    def slow(x: int, y: int) -> int:
        time.sleep(0.05)
        return x + y

    @app.task(name="interop.report")
    def report(x: int, y: int) -> int:
        current_job().progress(x)
        current_job().log(f"y={y}")
        return x + y

    seen: dict[str, Any] = {}

    @app.task(name="interop.gather")
    def gather(label: str) -> dict[str, Any]:
        # the same answer as worker.mjs's "gather", from taskflow's side
        job = current_job()
        values = job.children_results()
        seen[label] = {"results": job.results(), "by_key": values}
        return {"label": label, "sum": sum(v if isinstance(v, int) else v["sum"]
                                           for v in values.values()),
                "keys": sorted(values), "failed": job.failed_children()}

    @app.task(name="interop.total", queue=SIDE)
    def total(numbers: list[int], bonus: int = 0) -> int:
        return sum(numbers) + bonus

    yield Interop(app, url, redis_port, prefix, node_dir, add, flaky, boom, slow, report,
                  gather, total, seen)
    app.close()
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextlib.contextmanager
def worker_thread(app: App, **options: Any) -> Iterator[Worker]:
    """A taskflow worker running in its own event loop on a thread of this process."""
    worker = app.worker(**options)
    loops: list[asyncio.AbstractEventLoop] = []
    started = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        started.set()
        await worker.run()

    def serve() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=serve, name="interop-worker", daemon=True)
    thread.start()
    assert started.wait(10), "the taskflow worker did not start"
    try:
        yield worker
    finally:
        if loops and not loops[0].is_closed():
            loops[0].call_soon_threadsafe(worker.stop)
        thread.join(30)
        assert not thread.is_alive(), "the taskflow worker did not stop"
    if errors:
        raise errors[0]


class NodeProcess:
    """A long-running Node script; its JSON lines arrive on a queue as it prints them."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def expect(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the next line of this event (lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {event!r} from node within {timeout} s; saw {self.seen}")
            if line is None:
                self.lines.put(None)
                pytest.fail(f"node ended before {event!r}; saw {self.seen}; "
                            f"stderr: {''.join(self.stderr)}")
            self.seen.append(line)
            if line.get("event") == event:
                return line

    def finish(self) -> list[dict[str, Any]]:
        """Close its stdin (the signal to stop), wait for it; every line it printed."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.expect("done", NODE_TIMEOUT_S)
        self.close()
        return self.seen

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(NODE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def node_worker(interop: Interop, queues: tuple[str, ...] = (QUEUE,)) -> Iterator[NodeProcess]:
    """Node workers (concurrency 1) on these queues; see tests/node/worker.mjs."""
    proc = NodeProcess(["node", str(SCRIPTS / "worker.mjs")],
                       interop.env(TF_QUEUES=",".join(queues)))
    try:
        yield proc
    finally:
        proc.close()


def _subsequence(order: list[str], wanted: list[str]) -> list[str]:
    return [job_id for job_id in order if job_id in wanted]


# -- Node adds, taskflow runs ---------------------------------------------------------


def test_node_producer_taskflow_worker(interop: Interop) -> None:
    started: list[str] = []
    groups = [
        # one addBulk (one MULTI): two FIFO jobs, two prioritized ones, one LIFO
        [{"key": "a", "name": "interop.add", "data": {"x": 2, "y": 3}},
         {"key": "b", "name": "interop.add", "data": {"x": 10, "y": 20}},
         {"key": "p5", "name": "interop.add", "data": {"x": 5, "y": 5}, "opts": {"priority": 5}},
         {"key": "p1", "name": "interop.add", "data": {"x": 1, "y": 1}, "opts": {"priority": 1}},
         {"key": "lifo", "name": "interop.add", "data": {"x": 0, "y": 1}, "opts": {"lifo": True}}],
        [{"key": "flaky", "name": "interop.flaky", "data": {"x": 4, "y": 5},
          "opts": {"attempts": 2, "backoff": {"type": "fixed", "delay": 100}}}],
        [{"key": "delayed", "name": "interop.add", "data": {"x": 20, "y": 22},
          "opts": {"delay": 400}}],
        [{"key": "custom", "name": "interop.add", "data": {"x": 1, "y": 2},
          "opts": {"jobId": "custom-a"}}],
        [{"key": "report", "name": "interop.report", "data": {"x": 50, "y": 7}}],
        [{"key": "gone", "name": "interop.add", "data": {"x": 6, "y": 7},
          "opts": {"removeOnComplete": True}}],
        [{"key": "boom", "name": "interop.boom", "data": {"x": 7}}],
        [{"key": "unknown", "name": "interop.nobody", "data": {}}],
    ]
    with worker_thread(interop.app, concurrency=1, grace_s=5) as worker:
        worker.on("active", lambda job: started.append(job.id))
        lines = interop.node("producer.mjs", TF_JOBS=json.dumps(groups))

        ids = {line["key"]: line["id"] for line in lines if line["event"] == "added"}
        finished = {line["key"]: line for line in lines if line["event"] == "finished"}
        assert set(finished) == set(ids) == {g["key"] for group in groups for g in group}
        jobs = {key: interop.app.job(job_id) for key, job_id in ids.items()}
        assert ids["custom"] == "custom-a"

        # taskflow's result() and Node's waitUntilFinished() agree
        expected = {"a": 5, "b": 30, "p5": 10, "p1": 2, "lifo": 1, "flaky": 9, "delayed": 42,
                    "custom": 3, "report": 57}
        for key, value in expected.items():
            assert jobs[key].result(timeout=RESULT_TIMEOUT_S) == value, key
            assert finished[key]["outcome"] == "completed", finished[key]
            assert finished[key]["value"] == value
            node_job = finished[key]["job"]
            assert node_job["returnvalue"] == value
            assert node_job["processedBy"] == worker.name
            assert node_job["finishedOn"] >= node_job["processedOn"] >= node_job["timestamp"]

        # a custom id taskflow adds again is the Node job already there
        again = interop.add.options(job_id="custom-a").delay(100, 100)
        assert again.id == "custom-a" and again.result(timeout=RESULT_TIMEOUT_S) == 3

        # progress and log lines written by a taskflow task, read by Node
        assert finished["report"]["job"]["progress"] == 50
        assert finished["report"]["logs"] == ["y=7"]

        # removeOnComplete: gone once done; the result is still in the events
        assert jobs["gone"].result(timeout=RESULT_TIMEOUT_S) == 13
        assert finished["gone"]["job"] is None

        with pytest.raises(JobFailedError) as boom:
            jobs["boom"].result(timeout=RESULT_TIMEOUT_S)
        assert boom.value.reason == "ValueError: boom 7"
        assert "ValueError: boom 7" in (boom.value.traceback or "")
        assert finished["boom"]["outcome"] == "failed"
        assert finished["boom"]["value"] == "ValueError: boom 7"
        node_boom = finished["boom"]["job"]
        assert node_boom["failedReason"] == "ValueError: boom 7"
        assert node_boom["attemptsMade"] == 1
        assert len(node_boom["stacktrace"]) == 1 and "boom 7" in node_boom["stacktrace"][0]

        with pytest.raises(JobFailedError) as unknown:
            jobs["unknown"].result(timeout=RESULT_TIMEOUT_S)
        assert "interop.nobody" in unknown.value.reason
        assert finished["unknown"]["outcome"] == "failed"

    # retried once after Node's fixed backoff, as taskflow reads the options
    flaky = jobs["flaky"].info()
    assert flaky.attempts_made == 2 and flaky.attempts_started == 2
    assert flaky.opts["backoff"] == {"type": "fixed", "delay": 100}
    assert finished["flaky"]["job"]["attemptsMade"] == 2
    assert finished["flaky"]["job"]["opts"]["attempts"] == 2

    delayed = jobs["delayed"].info()
    assert delayed.processed_on_ms is not None and delayed.timestamp_ms is not None
    assert delayed.processed_on_ms - delayed.timestamp_ms >= 380

    # LIFO first, then the wait list oldest first, then by priority, lowest first
    bulk = [ids[k] for k in ("lifo", "a", "b", "p1", "p5")]
    assert _subsequence(started, bulk) == bulk

    # QueueEvents saw taskflow's events
    events = next(line for line in lines if line["event"] == "events")
    for key in expected:
        assert {"active", "completed"} <= set(events["byJob"][ids[key]]), key
        assert events["returnvalues"][ids[key]] == expected[key]
    assert events["returnvalues"][ids["gone"]] == 13
    assert "delayed" in events["byJob"][ids["flaky"]]  # the retry, after the backoff
    assert "delayed" in events["byJob"][ids["delayed"]]
    assert {"failed", "retries-exhausted"} <= set(events["byJob"][ids["boom"]])

    counts = interop.counts()
    assert counts == interop.node_counts()
    assert counts == {**dict.fromkeys(STATES, 0), "completed": len(expected), "failed": 2}


# -- taskflow adds, Node runs ---------------------------------------------------------


def test_taskflow_producer_node_worker(interop: Interop) -> None:
    add, flaky, boom, report = interop.add, interop.flaky, interop.boom, interop.report
    with node_worker(interop) as node:
        node.expect("ready")
        node.expect("idle")  # drained: now blocked on the marker

        bulk = interop.app.add_bulk([
            add.s(1, 1), add.s(2, 2), add.s(3, 3),
            add.options(priority=5).s(5, 5), add.options(priority=1).s(1, 10),
            add.options(lifo=True).s(0, 1),
        ])
        delayed = add.options(delay_s=0.4).delay(20, 22)
        retried = flaky.options(attempts=2, backoff=("fixed", 0.1)).delay(x=4, y=5)
        custom = add.options(job_id="tf-custom").delay(1, 2)
        reported = report.delay(50, 7)
        gone = add.options(keep_completed=False).delay(6, 7)
        failed = boom.options(attempts=2).delay(x=7)

        assert [job.result(timeout=RESULT_TIMEOUT_S) for job in bulk] == [2, 4, 6, 10, 11, 1]
        assert delayed.result(timeout=RESULT_TIMEOUT_S) == 42
        assert retried.result(timeout=RESULT_TIMEOUT_S) == 9
        assert custom.result(timeout=RESULT_TIMEOUT_S) == 3
        assert reported.result(timeout=RESULT_TIMEOUT_S) == 57
        assert gone.result(timeout=RESULT_TIMEOUT_S) == 13  # from the events: the job is gone
        with pytest.raises(JobFailedError) as error:
            failed.result(timeout=RESULT_TIMEOUT_S)
        assert error.value.reason == "boom 7"
        assert "boom 7" in (error.value.traceback or "")
        lines = node.finish()

    assert not [line for line in lines if line["event"] == "error"], lines
    runs: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line["event"] == "process":
            runs.setdefault(line["job"]["id"], []).append(line["job"])

    # Node reads name, data and options as taskflow wrote them
    for job, (x, y) in zip(bulk, [(1, 1), (2, 2), (3, 3), (5, 5), (1, 10), (0, 1)], strict=True):
        (run,) = runs[job.id]
        assert run["name"] == "interop.add"
        assert run["data"] == {"x": x, "y": y}
        assert run["opts"]["attempts"] == 0  # left out by taskflow: one attempt, as in BullMQ
        assert run["attemptsMade"] == 0
    assert runs[bulk[3].id][0]["priority"] == 5
    assert runs[bulk[3].id][0]["opts"]["priority"] == 5
    assert runs[bulk[5].id][0]["opts"]["lifo"] is True
    assert runs[delayed.id][0]["opts"]["delay"] == 400
    assert [r["attemptsMade"] for r in runs[retried.id]] == [0, 1]
    assert runs[retried.id][0]["name"] == "interop.flaky"
    assert runs[retried.id][0]["opts"]["attempts"] == 2
    assert runs[retried.id][0]["opts"]["backoff"] == {"type": "fixed", "delay": 100}
    assert runs[custom.id][0]["opts"]["jobId"] == "tf-custom"
    assert runs[gone.id][0]["opts"]["removeOnComplete"] is True
    assert [r["attemptsMade"] for r in runs[failed.id]] == [0, 1]
    assert runs[failed.id][0]["data"] == {"x": 7}

    # Node took the LIFO job first, then the wait list oldest first, then by priority
    order = [line["job"]["id"] for line in lines if line["event"] == "process"]
    wanted = [bulk[5].id, bulk[0].id, bulk[1].id, bulk[2].id, bulk[4].id, bulk[3].id]
    assert _subsequence(order, wanted) == wanted

    info = retried.info()
    assert info.state == "completed" and info.attempts_made == 2
    assert info.result == 9
    info = failed.info()
    assert info.state == "failed" and info.attempts_made == 2
    assert info.failed_reason == "boom 7"
    info = delayed.info()
    assert info.processed_on_ms is not None and info.timestamp_ms is not None
    assert info.processed_on_ms - info.timestamp_ms >= 380
    # progress and log lines written by a Node processor, read by taskflow
    assert reported.info().progress == 50
    assert reported.logs() == ["y=7"]
    with pytest.raises(JobNotFoundError):
        gone.info()

    counts = interop.counts()
    assert counts == interop.node_counts()
    assert counts == {**dict.fromkeys(STATES, 0), "completed": 10, "failed": 1}


# -- pausing, either side -------------------------------------------------------------


def test_pause_from_node_holds_taskflow_worker(interop: Interop) -> None:
    (line,) = interop.node("admin.mjs", "pause")
    assert line["paused"] is True
    assert interop.app.queue(QUEUE).is_paused()
    with worker_thread(interop.app, concurrency=1, grace_s=5):
        job = interop.add.delay(2, 3)
        time.sleep(0.5)
        assert job.state() == "waiting"
        (line,) = interop.node("admin.mjs", "resume")
        assert line["paused"] is False
        assert not interop.app.queue(QUEUE).is_paused()
        assert job.result(timeout=RESULT_TIMEOUT_S) == 5


def test_pause_from_taskflow_holds_node_worker(interop: Interop) -> None:
    interop.app.queue(QUEUE).pause()
    (line,) = interop.node("admin.mjs", "is-paused")
    assert line["paused"] is True
    with node_worker(interop) as node:
        node.expect("ready")
        job = interop.add.delay(2, 3)
        time.sleep(0.5)
        assert job.state() == "waiting"
        interop.app.queue(QUEUE).resume()
        assert job.result(timeout=RESULT_TIMEOUT_S) == 5
        lines = node.finish()
    assert [line["job"]["id"] for line in lines if line["event"] == "process"] == [job.id]
    (line,) = interop.node("admin.mjs", "is-paused")
    assert line["paused"] is False


# -- both kinds of worker on one queue ------------------------------------------------


def test_node_and_taskflow_workers_share_a_queue(interop: Interop) -> None:
    taken_here: list[str] = []
    groups = [[{"key": f"n{i}", "name": "interop.slow", "data": {"x": i, "y": 100}}
               for i in range(10)]]
    with worker_thread(interop.app, concurrency=2, grace_s=5) as worker, \
            node_worker(interop) as node:
        worker.on("active", lambda job: taken_here.append(job.id))
        node.expect("idle")
        # each side lists the other's worker among the queue's workers
        (line,) = interop.node("admin.mjs", "workers")
        assert any(name.endswith(f":w:{worker.name}") for name in line["names"]), line
        assert any(name.endswith(":w:node-interop-worker") for name in line["names"]), line
        names = [w["name"] for w in interop.app.queue(QUEUE).workers()]
        assert worker.name in names and "node-interop-worker" in names, names

        ours = interop.app.add_bulk([interop.slow.s(i, 200) for i in range(10)])
        lines = interop.node("producer.mjs", TF_JOBS=json.dumps(groups))
        assert [job.result(timeout=RESULT_TIMEOUT_S) for job in ours] == [
            i + 200 for i in range(10)]
        theirs = {line["key"]: line for line in lines if line["event"] == "finished"}
        assert [theirs[f"n{i}"]["value"] for i in range(10)] == [i + 100 for i in range(10)]
        node_lines = node.finish()

    taken_there = [line["job"]["id"] for line in node_lines if line["event"] == "process"]
    everything = {job.id for job in ours} | {line["id"] for line in theirs.values()}
    # every job ran once, on one side or the other, and both sides did some
    assert sorted(taken_here + taken_there) == sorted(everything)
    assert taken_here and taken_there, (taken_here, taken_there)
    by_node = set(taken_there)
    for job_id in everything:
        processed_by = interop.app.job(job_id).info()
        assert processed_by.state == "completed"
    for line in theirs.values():
        expected = "node-interop-worker" if line["id"] in by_node else worker.name
        assert line["job"]["processedBy"] == expected

    counts = interop.counts()
    assert counts == interop.node_counts()
    assert counts == {**dict.fromkeys(STATES, 0), "completed": 20}


# -- queue-wide limits set from Node --------------------------------------------------


def test_global_rate_limit_from_node_holds_taskflow_worker(interop: Interop) -> None:
    assert interop.node("admin.mjs", "global-rate-limit", "2", "600")[0]["event"] == "ok"
    jobs = interop.app.add_bulk([interop.add.s(i, 0) for i in range(6)])
    client = redis.Redis(host="127.0.0.1", port=interop.port, decode_responses=True)
    limiter = f"{interop.prefix}:{QUEUE}:limiter"
    windows: list[tuple[str | None, int]] = []

    def look(job: Any) -> None:  # as each job starts: the window Node's workers read
        windows.append((cast(str | None, client.get(limiter)), cast(int, client.pttl(limiter))))

    try:
        with worker_thread(interop.app, concurrency=5, grace_s=5) as worker:
            worker.on("active", look)
            assert [job.result(timeout=RESULT_TIMEOUT_S) for job in jobs] == list(range(6))
    finally:
        client.close()
    # the jobs taskflow took count in the limiter's window, as Node's takes do
    assert [count for count, _ in windows] == ["2"] * 6, windows
    assert all(0 < ttl <= 600 for _, ttl in windows), windows
    starts = sorted(job.info().processed_on_ms or 0 for job in jobs)
    # at most 2 jobs start within any 600 ms window
    gaps = [later - earlier for earlier, later in zip(starts, starts[2:], strict=False)]
    assert min(gaps) >= 590, starts


def test_global_concurrency_from_node_holds_taskflow_worker(interop: Interop) -> None:
    assert interop.node("admin.mjs", "global-concurrency", "1")[0]["event"] == "ok"
    jobs = interop.app.add_bulk([interop.slow.s(i, 0) for i in range(3)])
    with worker_thread(interop.app, concurrency=3, grace_s=5):
        assert [job.result(timeout=RESULT_TIMEOUT_S) for job in jobs] == list(range(3))
    spans = sorted((info.processed_on_ms or 0, info.finished_on_ms or 0)
                   for info in (job.info() for job in jobs))
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished, spans


# -- a job Node's stalled check gave up on ---------------------------------------------


def test_stalled_too_often_by_node_fails_in_taskflow(interop: Interop) -> None:
    job = interop.add.delay(2, 3)
    client = redis.Redis(host="127.0.0.1", port=interop.port, decode_responses=True)
    try:
        # a worker took the job and died: active, its lock gone
        base = f"{interop.prefix}:{QUEUE}:"
        assert client.rpoplpush(base + "wait", base + "active") == job.id
        assert interop.node("admin.mjs", "stalled-check", "0")[0]["event"] == "ok"
        fields = cast(dict[str, str], client.hgetall(base + job.id))
        assert fields["stc"] == "1" and fields["defa"] == "job stalled more than allowable limit"
        assert client.lrange(base + "wait", 0, -1) == [job.id]
    finally:
        client.close()
    with worker_thread(interop.app, concurrency=1, grace_s=5), \
            pytest.raises(JobFailedError) as failed:
        job.result(timeout=RESULT_TIMEOUT_S)
    assert failed.value.reason == "job stalled more than allowable limit"


# -- flows across both sides ----------------------------------------------------------


def _node_spec(name: str, queue: str, data: dict[str, Any], children: list[Any] | None = None,
               **opts: Any) -> dict[str, Any]:
    """A node of a Node FlowProducer tree."""
    spec: dict[str, Any] = {"name": f"interop.{name}", "queueName": queue, "data": data,
                            "opts": opts}
    if children:
        spec["children"] = children
    return spec


def _flat(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of a tree printed by flow.mjs, parents first."""
    return [tree, *(node for child in tree["children"] for node in _flat(child))]


def _node_view(interop: Interop, jobs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """What Node's Job getters see of these (queue, id) jobs, by job key."""
    lines = interop.node("flow.mjs", "inspect",
                         TF_JOBS=json.dumps([{"queue": q, "id": i} for q, i in jobs]))
    return {f"{interop.prefix}:{line['queue']}:{line['id']}": line
            for line in lines if line["event"] == "job"}


def _failure(job: Any) -> str:
    with pytest.raises(JobFailedError) as failed:
        job.result(timeout=RESULT_TIMEOUT_S)
    return failed.value.reason


def test_node_flow_producer_taskflow_workers(interop: Interop) -> None:
    """A FlowProducer tree (nested, two queues, failure options) run by taskflow."""
    flows = [
        _node_spec("gather", QUEUE, {"label": "root"}, [
            _node_spec("gather", SIDE, {"label": "mid"}, [
                _node_spec("add", QUEUE, {"x": 1, "y": 2}, failParentOnFailure=True),
                _node_spec("add", SIDE, {"x": 3, "y": 4}),
            ], failParentOnFailure=True),
            _node_spec("add", SIDE, {"x": 10, "y": 20}),
            _node_spec("boom", QUEUE, {"x": 5}, ignoreDependencyOnFailure=True),
        ]),
        _node_spec("gather", QUEUE, {"label": "doomed"}, [
            _node_spec("gather", SIDE, {"label": "doomed-mid"}, [
                _node_spec("boom", QUEUE, {"x": 6}, failParentOnFailure=True),
                _node_spec("add", SIDE, {"x": 1, "y": 1}),
            ], failParentOnFailure=True),
        ]),
        # no failure option: BullMQ leaves the parent waiting, and so does taskflow
        _node_spec("gather", QUEUE, {"label": "stuck"}, [_node_spec("boom", SIDE, {"x": 7})]),
    ]
    lines = interop.node("flow.mjs", "add", TF_FLOWS=json.dumps(flows))
    root, doomed, stuck = (line["tree"] for line in lines if line["event"] == "added")
    mid, one, two, thirty, boom5 = _flat(root)[1:]
    doomed_mid, boom6, late = _flat(doomed)[1:]
    app = interop.app
    assert app.job(root["id"]).state() == "waiting-children"

    with worker_thread(app, queues=[QUEUE, SIDE], concurrency=4, grace_s=5):
        result = app.job(root["id"]).result(timeout=RESULT_TIMEOUT_S)
        doomed_reason = _failure(app.job(doomed["id"]))
        assert app.job(late["id"], SIDE).result(timeout=RESULT_TIMEOUT_S) == 2
        assert _failure(app.job(stuck["children"][0]["id"], SIDE)) == "ValueError: boom 7"
        time.sleep(0.2)
        assert app.job(stuck["id"]).state() == "waiting-children"

    # the parents run by taskflow read their Node-added children's results by key
    assert result == {"label": "root", "sum": 40, "keys": sorted([mid["key"], thirty["key"]]),
                      "failed": {boom5["key"]: "ValueError: boom 5"}}
    assert interop.seen["mid"]["by_key"] == {one["key"]: 3, two["key"]: 7}
    # a Node parent records no order: results() lists completed children, then failed ones
    assert sorted(interop.seen["mid"]["results"]) == [3, 7]
    assert interop.seen["root"]["results"][-1] is None
    assert len(interop.seen["root"]["results"]) == 3
    assert doomed_reason == (f"child {doomed_mid['key']} failed: "
                             f"child {boom6['key']} failed: ValueError: boom 6")

    # and Node reads the same from its side
    nodes = [*_flat(root), *_flat(doomed), *_flat(stuck)]
    view = _node_view(interop, [(n["queue"], n["id"]) for n in nodes])
    assert view[root["key"]]["state"] == "completed"
    assert view[root["key"]]["returnvalue"] == result
    assert view[root["key"]]["childrenValues"] == {
        mid["key"]: interop.seen["root"]["by_key"][mid["key"]], thirty["key"]: 30}
    assert view[root["key"]]["ignored"] == {boom5["key"]: "ValueError: boom 5"}
    assert view[mid["key"]]["returnvalue"] == {
        "label": "mid", "sum": 10, "keys": sorted([one["key"], two["key"]]), "failed": {}}
    assert view[mid["key"]]["childrenValues"] == {one["key"]: 3, two["key"]: 7}
    assert view[boom5["key"]]["state"] == "failed"
    assert view[doomed["key"]]["state"] == view[doomed_mid["key"]]["state"] == "failed"
    assert view[doomed["key"]]["failedReason"] == doomed_reason
    # the child that failed its parent is "failed" (":unsuccessful") to BullMQ, not ignored
    assert view[doomed_mid["key"]]["dependencies"] == {
        "processed": {late["key"]: 2}, "unprocessed": [],
        "failed": [boom6["key"]], "ignored": {}}
    assert view[doomed["key"]]["dependencies"]["failed"] == [doomed_mid["key"]]
    assert view[stuck["key"]]["state"] == "waiting-children"
    assert view[stuck["key"]]["dependencies"]["unprocessed"] == [stuck["children"][0]["key"]]


POLICIES = ("fail", "ignore", "continue", "remove")


def _taskflow_flows(interop: Interop) -> dict[str, Any]:
    """taskflow flows: nested across queues, a chord, a chain, each failure policy."""
    add, boom, gather, total = interop.add, interop.boom, interop.gather, interop.total
    flows: dict[str, Any] = {
        "nested": gather.s("nested", children=[
            gather.options(queue=SIDE).s("nested-mid", children=[
                add.s(1, 2), add.options(queue=SIDE).s(3, 4)]),
            add.options(queue=SIDE).s(10, 20),
        ]).delay(),
        "chord": chord([add.s(i, 1) for i in range(3)], total.s(bonus=1000)).delay(),
        "chain": chain(add.s(1, 2), add.options(queue=SIDE).s(10), add.s(100)).delay(),
        # the default policy, two levels up: the child fails its parent, which fails its own
        "deep": gather.s("deep", children=[
            gather.options(queue=SIDE).s("deep-mid", children=[boom.s(6)])]).delay(),
    }
    for policy in POLICIES:
        # a "continue" parent runs at once; BullMQ refuses to complete it while it has
        # pending children (taskflow completes it), so it gets no sibling here
        siblings = [] if policy == "continue" else [add.s(1, 1)]
        flows[policy] = gather.s(policy, children=[
            boom.options(queue=SIDE, on_failure=policy).s(5), *siblings]).delay()
    return flows


def _outcomes(flows: dict[str, Any]) -> dict[str, Any]:
    """Each flow's result, or its failure, in words both sides share: child keys as
    child0, child1, ...; a failed child's reason without the exception's type (Node's
    Error.message is the bare text); a parent's failure as "child <key> failed", which
    is all BullMQ says (taskflow adds the child's reason)."""
    found: dict[str, Any] = {}
    for label, root in flows.items():
        names = {child.key: f"child{i}" for i, child in enumerate(root.children)}
        try:
            result = root.result(timeout=RESULT_TIMEOUT_S)
        except JobFailedError as exc:
            reason = exc.reason.replace(root.children[0].key, "child0")
            found[label] = ("failed", reason.partition(": ")[0])
            continue
        if isinstance(result, dict):
            result = {**result, "keys": [names[k] for k in result["keys"]],
                      "failed": {names[k]: v.removeprefix("ValueError: ")
                                 for k, v in result["failed"].items()}}
        found[label] = result
    return found


def test_taskflow_flows_node_workers(interop: Interop) -> None:
    """The same taskflow flows end the same under Node workers as under taskflow's."""
    under_node = _taskflow_flows(interop)
    # large enough to be staged in chunks (flows.ONE_CALL_NODES), failed by one child
    staged = interop.gather.s("staged", children=[
        interop.boom.options(queue=SIDE).s(9),
        *(interop.add.s(i, 0) for i in range(ONE_CALL_NODES))]).delay()
    with node_worker(interop, queues=(QUEUE, SIDE)) as node:
        node.expect("ready")
        by_node = _outcomes(under_node)
        assert _outcomes({"staged": staged}) == {"staged": ("failed", "child child0 failed")}
        lines = node.finish()
    assert not [line for line in lines if line["event"] == "error"], lines
    under_taskflow = _taskflow_flows(interop)
    with worker_thread(interop.app, queues=[QUEUE, SIDE], concurrency=4, grace_s=5):
        by_taskflow = _outcomes(under_taskflow)

    assert by_node == by_taskflow
    assert by_node["nested"] == {"label": "nested", "sum": 40, "keys": ["child0", "child1"],
                                 "failed": {}}
    assert (by_node["chord"], by_node["chain"]) == (1006, 113)
    assert by_node["fail"] == by_node["deep"] == ("failed", "child child0 failed")
    assert by_node["ignore"] == {"label": "ignore", "sum": 2, "keys": ["child1"],
                                 "failed": {"child0": "boom 5"}}
    assert by_node["continue"] == {"label": "continue", "sum": 0, "keys": [],
                                   "failed": {"child0": "boom 5"}}
    assert by_node["remove"] == {"label": "remove", "sum": 2, "keys": ["child1"], "failed": {}}

    # Node ran the parents too: its chord callback ("total") read getChildrenValues(),
    # not the "numbers" argument taskflow's worker would have fed it
    ran = {line["job"]["name"] for line in lines if line["event"] == "process"}
    assert {"interop.gather", "interop.total", "interop.add", "interop.boom"} <= ran
    # BullMQ reads a child's failure policy from its "parent" field: taskflow writes it
    # there (as well as in the opts), in one call and when staged
    flags = {"fail": "fpof", "continue": "cpof", "ignore": "idof", "remove": "rdof"}
    client = redis.Redis(host="127.0.0.1", port=interop.port, decode_responses=True)
    try:
        for root, policy in [(under_node[p], p) for p in POLICIES] + [(staged, "fail")]:
            parent = json.loads(cast(str, client.hget(root.children[0].key, "parent")))
            assert parent == {"id": root.id, "queueKey": f"{interop.prefix}:{root.queue}",
                              flags[policy]: True}, (policy, parent)
    finally:
        client.close()


def test_flows_split_between_node_and_taskflow_workers(interop: Interop) -> None:
    """Children on Node workers with the parent on taskflow's, and the reverse; each
    kind of tree added by taskflow and by Node's FlowProducer."""
    app, add, boom, gather = interop.app, interop.add, interop.boom, interop.gather
    # Node runs SIDE, taskflow runs QUEUE
    tf_parent = gather.s("tf-parent", children=[
        add.options(queue=SIDE).s(1, 2), boom.options(queue=SIDE, on_failure="ignore").s(7),
        add.options(queue=SIDE).s(3, 4)]).delay()
    tf_parent_doomed = gather.s("tf-parent-doomed", children=[
        boom.options(queue=SIDE).s(8)]).delay()
    node_parent = gather.options(queue=SIDE).s("node-parent", children=[
        add.s(5, 5), boom.options(on_failure="ignore").s(9), add.s(1, 1)]).delay()
    node_parent_doomed = gather.options(queue=SIDE).s("node-parent-doomed", children=[
        boom.s(10)]).delay()
    lines = interop.node("flow.mjs", "add", TF_FLOWS=json.dumps([
        _node_spec("gather", QUEUE, {"label": "fp-tf-parent"}, [
            _node_spec("add", SIDE, {"x": 2, "y": 2}),
            _node_spec("boom", SIDE, {"x": 11}, ignoreDependencyOnFailure=True)]),
        _node_spec("gather", QUEUE, {"label": "fp-tf-parent-doomed"}, [
            _node_spec("boom", SIDE, {"x": 12}, failParentOnFailure=True)]),
        _node_spec("gather", SIDE, {"label": "fp-node-parent"}, [
            _node_spec("add", QUEUE, {"x": 4, "y": 4}),
            _node_spec("boom", QUEUE, {"x": 13}, ignoreDependencyOnFailure=True)]),
        _node_spec("gather", SIDE, {"label": "fp-node-parent-doomed"}, [
            _node_spec("boom", QUEUE, {"x": 14}, failParentOnFailure=True)]),
    ]))
    fp = [line["tree"] for line in lines if line["event"] == "added"]
    with node_worker(interop, queues=(SIDE,)) as node, \
            worker_thread(app, queues=[QUEUE], concurrency=4, grace_s=5):
        node.expect("ready")
        # taskflow's parent reads what Node's children returned, and their failures
        keys = sorted([tf_parent.children[0].key, tf_parent.children[2].key])
        assert tf_parent.result(timeout=RESULT_TIMEOUT_S) == {
            "label": "tf-parent", "sum": 10, "keys": keys,
            "failed": {tf_parent.children[1].key: "boom 7"}}
        assert interop.seen["tf-parent"]["results"] == [3, None, 7]  # in the order given
        # Node's parent reads what taskflow's children returned
        keys = sorted([node_parent.children[0].key, node_parent.children[2].key])
        assert node_parent.result(timeout=RESULT_TIMEOUT_S) == {
            "label": "node-parent", "sum": 12, "keys": keys,
            "failed": {node_parent.children[1].key: "ValueError: boom 9"}}
        # a child failing on Node fails the parent on taskflow (BullMQ's deferred
        # failure, "defa"), and one failing on taskflow fails Node's parent at once
        assert _failure(tf_parent_doomed) == f"child {tf_parent_doomed.children[0].key} failed"
        assert _failure(node_parent_doomed) == (
            f"child {node_parent_doomed.children[0].key} failed: ValueError: boom 10")

        # the same with trees added by Node's FlowProducer
        assert app.job(fp[0]["id"]).result(timeout=RESULT_TIMEOUT_S) == {
            "label": "fp-tf-parent", "sum": 4, "keys": [fp[0]["children"][0]["key"]],
            "failed": {fp[0]["children"][1]["key"]: "boom 11"}}
        assert _failure(app.job(fp[1]["id"])) == f"child {fp[1]['children'][0]['key']} failed"
        assert app.job(fp[2]["id"], SIDE).result(timeout=RESULT_TIMEOUT_S) == {
            "label": "fp-node-parent", "sum": 8, "keys": [fp[2]["children"][0]["key"]],
            "failed": {fp[2]["children"][1]["key"]: "ValueError: boom 13"}}
        assert _failure(app.job(fp[3]["id"], SIDE)) == (
            f"child {fp[3]['children'][0]['key']} failed: ValueError: boom 14")
        node_lines = node.finish()
    assert not [line for line in node_lines if line["event"] == "error"], node_lines
    # each side ran only its own queue's jobs
    assert {line["job"]["queue"] for line in node_lines if line["event"] == "process"} == {SIDE}
    ran_by_node = {line["job"]["id"] for line in node_lines if line["event"] == "process"}
    assert node_parent.id in ran_by_node and node_parent_doomed.id not in ran_by_node

    view = _node_view(interop, [(QUEUE, tf_parent.id), (SIDE, node_parent.id),
                                (QUEUE, fp[0]["id"]), (SIDE, fp[2]["id"])])
    assert view[tf_parent.key]["childrenValues"] == {
        tf_parent.children[0].key: 3, tf_parent.children[2].key: 7}
    assert view[tf_parent.key]["ignored"] == {tf_parent.children[1].key: "boom 7"}
    assert view[node_parent.key]["childrenValues"] == {
        node_parent.children[0].key: 10, node_parent.children[2].key: 2}
    assert view[fp[0]["key"]]["returnvalue"]["sum"] == 4
    assert view[fp[2]["key"]]["ignored"] == {fp[2]["children"][1]["key"]: "ValueError: boom 13"}
