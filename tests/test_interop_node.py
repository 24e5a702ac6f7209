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

from taskflow import App, JobFailedError, JobNotFoundError, Task, Worker, current_job
from taskflow.backends import embedded

SCRIPTS = Path(__file__).parent / "node"
PACKAGE_JSON = SCRIPTS / "package.json"
NPM_TIMEOUT_S = 100  # under the suite's 120 s per-test timeout, which counts fixture setup
NODE_TIMEOUT_S = 30
RESULT_TIMEOUT_S = 15
QUEUE = "interop"
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

    yield Interop(app, url, redis_port, prefix, node_dir, add, flaky, boom, slow, report)
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
def node_worker(interop: Interop) -> Iterator[NodeProcess]:
    proc = NodeProcess(["node", str(SCRIPTS / "worker.mjs")], interop.env())
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
        assert run["opts"]["attempts"] == 1
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
