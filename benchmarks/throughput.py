"""taskflow throughput and Redis cost, standalone.

    .venv/bin/python benchmarks/throughput.py [--jobs 20000] [--concurrency 32]
        [--idle-s 12] [--redis-url redis://127.0.0.1:PORT/0] [--json out.json]

Without ``--redis-url`` it starts a private ``redis-server`` on a free
127.0.0.1 port (no persistence) and shuts it down at the end; a given URL must
be loopback (it is not flushed: the run uses a key prefix of its own and deletes
its keys at the end, but other clients of that server would pollute the counts).

Phases, each between two ``INFO`` snapshots (their own calls are subtracted):

1. enqueue: ``app.aadd_bulk`` of N no-op jobs in one call (taskflow sends one
   ``add`` script call per 1000 jobs);
2. drain: ONE in-process worker (concurrency C, ``pool="async"``) from its start
   to the N-th ``completed`` event (fired after the outcome is recorded);
3. idle: the same worker, with nothing to do, for ``--idle-s`` seconds. Its
   traffic is also watched with MONITOR, which tells commands the worker sent
   from commands run inside its scripts.

Per phase: wall time, jobs/s, Redis commands per job (``INFO commandstats``;
commands inside Lua scripts count, as in the peers harness), script calls per
job, Redis CPU per job (``used_cpu_sys + used_cpu_user``) and this process's CPU
per job (the Python side: producer or worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ipaddress
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis

from taskflow import App

SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro")
BLOCKING_COMMANDS = ("bzpopmin", "bzpopmax", "blpop", "brpop", "blmove", "xread")


# --------------------------------------------------------------------------- redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(binary: str) -> Iterator[str]:
    """A redis-server of our own on a free loopback port; yields its URL."""
    workdir = tempfile.mkdtemp(prefix="taskflow-bench-redis-")
    port = free_port()
    log = open(os.path.join(workdir, "redis.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--daemonize", "no", "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start; see {workdir}/redis.log"
                                     ) from exc
                time.sleep(0.05)
        client.close()
        print(f"private redis-server pid {proc.pid} on {url}", file=sys.stderr)
        yield url
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis.from_url(url, socket_timeout=5).shutdown(nosave=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by pid
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def check_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    host = parts.hostname or "127.0.0.1"
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if parts.scheme != "redis" or not ok:
        raise SystemExit(f"--redis-url must be redis:// on a loopback host (or unix://): {url!r}")


@dataclass
class Snapshot:
    calls: dict[str, int]
    usec: dict[str, int]
    cpu_s: float
    t: float = field(default_factory=time.perf_counter)
    client_cpu_s: float = 0.0

    @classmethod
    def take(cls, client: redis.Redis) -> Snapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        info: dict[str, Any] = client.info("all")  # type: ignore[assignment]
        calls = {k[len("cmdstat_"):]: int(v["calls"]) for k, v in info.items()
                 if k.startswith("cmdstat_")}
        usec = {k[len("cmdstat_"):]: int(v["usec"]) for k, v in info.items()
                if k.startswith("cmdstat_")}
        cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return cls(calls, usec, cpu, client_cpu_s=usage.ru_utime + usage.ru_stime)


@dataclass
class Phase:
    name: str
    jobs: int
    wall_s: float
    calls: Counter[str]
    usec: Counter[str]
    redis_cpu_s: float
    client_cpu_s: float

    @classmethod
    def between(cls, name: str, jobs: int, a: Snapshot, b: Snapshot, wall_s: float) -> Phase:
        calls = Counter({k: b.calls.get(k, 0) - a.calls.get(k, 0) for k in b.calls})
        calls["info"] -= 1  # the INFO that took snapshot a (b's own is counted after it)
        usec = Counter({k: b.usec.get(k, 0) - a.usec.get(k, 0) for k in b.usec})
        return cls(name, jobs, wall_s, +calls, +usec, b.cpu_s - a.cpu_s,
                   b.client_cpu_s - a.client_cpu_s)

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    @property
    def scripts(self) -> int:
        return sum(self.calls[k] for k in SCRIPT_COMMANDS)

    def row(self) -> dict[str, Any]:
        n = max(1, self.jobs)
        return {
            "phase": self.name, "jobs": self.jobs, "wall_s": self.wall_s,
            "jobs_per_s": self.jobs / self.wall_s if self.wall_s else 0.0,
            "cmds_per_job": self.commands / n, "scripts_per_job": self.scripts / n,
            "redis_cpu_us_per_job": self.redis_cpu_s * 1e6 / n,
            "client_cpu_us_per_job": self.client_cpu_s * 1e6 / n,
            "script_usec_per_job": sum(self.usec[k] for k in SCRIPT_COMMANDS) / n,
            "calls": dict(self.calls.most_common()),
        }


# ------------------------------------------------------------------------- monitor


class Monitor:
    """MONITOR in a thread: which commands clients send, and which run inside scripts."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.sent: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()

    def _watch(self) -> None:
        with self.client.monitor() as monitor:  # type: ignore[no-untyped-call]
            conn = monitor.connection
            assert conn is not None
            self._ready.set()
            while not self._stop.is_set():
                if not conn.can_read(timeout=0.2):
                    continue
                entry = monitor.next_command()
                name = entry["command"].split(" ", 1)[0].strip('"').lower()
                if entry.get("client_type") == "lua":
                    self.in_scripts[name] += 1
                else:
                    self.sent[name] += 1


# --------------------------------------------------------------------------- bench


async def run(url: str, jobs: int, concurrency: int, idle_s: float,
              profile_to: str | None = None) -> dict[str, Any]:
    prefix = f"tfbench{uuid.uuid4().hex[:8]}"
    app = App("throughput", url, prefix=prefix)

    @app.task(name="bench.noop")
    async def noop(i: int) -> None:
        return None

    info = redis.Redis.from_url(url)
    version = info.info("server")["redis_version"]  # type: ignore[index]
    await app.broker().ping()
    signatures = [noop.s(i) for i in range(jobs)]  # argument encoding is outside the timing

    # 1. enqueue
    a = Snapshot.take(info)
    t0 = time.perf_counter()
    await app.aadd_bulk(signatures)
    t1 = time.perf_counter()
    b = Snapshot.take(info)
    enqueue = Phase.between("enqueue", jobs, a, b, t1 - t0)

    # 2. drain
    done = asyncio.Event()
    completed = 0

    def on_completed(*_: Any) -> None:
        nonlocal completed
        completed += 1
        if completed == jobs:
            done.set()

    worker = app.worker(concurrency=concurrency, pool="async")
    worker.on("completed", on_completed)
    profiler = cProfile.Profile() if profile_to else None
    a = Snapshot.take(info)
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), 600)
    if profiler:
        profiler.disable()
    t1 = time.perf_counter()
    b = Snapshot.take(info)
    if profiler and profile_to:
        profiler.dump_stats(profile_to)
    drain = Phase.between("drain", jobs, a, b, t1 - t0)

    # 3. idle: the worker has nothing to do
    await asyncio.sleep(0.5)  # let the last round end and the worker settle on its marker
    with Monitor(url) as monitor:
        a = Snapshot.take(info)
        t0 = time.perf_counter()
        await asyncio.sleep(idle_s)
        t1 = time.perf_counter()
        b = Snapshot.take(info)
    idle = Phase.between("idle", 0, a, b, t1 - t0)
    monitor.sent.pop("info", None)  # our own snapshots; the worker sends no INFO

    worker.stop()
    await asyncio.wait_for(running, 60)
    await app.aclose()
    cleanup(info, prefix)
    info.close()

    per5 = 5.0 / idle.wall_s
    blocking = sum(n for k, n in monitor.sent.items() if k in BLOCKING_COMMANDS)
    other = sum(n for k, n in monitor.sent.items() if k not in BLOCKING_COMMANDS)
    total = Phase("enqueue+drain", jobs, enqueue.wall_s + drain.wall_s,
                  enqueue.calls + drain.calls, enqueue.usec + drain.usec,
                  enqueue.redis_cpu_s + drain.redis_cpu_s,
                  enqueue.client_cpu_s + drain.client_cpu_s)
    return {
        "jobs": jobs, "concurrency": concurrency, "url": url,
        "redis_version": version,
        "phases": [enqueue.row(), drain.row(), total.row()],
        "idle": {
            "seconds": idle.wall_s,
            "commandstats": dict(idle.calls.most_common()),
            "commandstats_per_5s": idle.commands * per5,
            "sent": dict(monitor.sent.most_common()),
            "in_scripts": dict(monitor.in_scripts.most_common()),
            "sent_blocking_per_5s": blocking * per5,
            "sent_other_per_5s": other * per5,
            "redis_cpu_ms": idle.redis_cpu_s * 1e3,
            "client_cpu_ms": idle.client_cpu_s * 1e3,
        },
    }


def cleanup(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def render(result: dict[str, Any]) -> str:
    head = ("phase", "jobs", "wall_s", "jobs/s", "cmds/job", "scripts/job",
            "redis_cpu_us/job", "client_cpu_us/job")
    rows = [head]
    for p in result["phases"]:
        rows.append((p["phase"], f"{p['jobs']}", f"{p['wall_s']:.3f}", f"{p['jobs_per_s']:,.0f}",
                     f"{p['cmds_per_job']:.2f}", f"{p['scripts_per_job']:.4f}",
                     f"{p['redis_cpu_us_per_job']:.1f}", f"{p['client_cpu_us_per_job']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for p in result["phases"][:2]:
        top = ", ".join(f"{k} {v / p['jobs']:.2f}" for k, v in list(p["calls"].items())[:12])
        lines.append(f"{p['phase']} commands per job: {top}")
    idle = result["idle"]
    sent = ", ".join(f"{k} {v}" for k, v in idle["sent"].items()) or "none"
    inside = ", ".join(f"{k} {v}" for k, v in idle["in_scripts"].items()) or "none"
    lines += [
        f"idle worker, {idle['seconds']:.1f} s: sent {sent}; inside scripts: {inside}",
        f"  -> per 5 s: blocking waits {idle['sent_blocking_per_5s']:.2f}, other commands sent "
        f"{idle['sent_other_per_5s']:.2f}; commandstats (all, scripts' inner calls too) "
        f"{idle['commandstats_per_5s']:.2f}; Redis CPU {idle['redis_cpu_ms']:.1f} ms, "
        f"worker CPU {idle['client_cpu_ms']:.1f} ms",
        f"(N={result['jobs']} C={result['concurrency']}; redis {result['redis_version']}; "
        f"{result['url']})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="taskflow throughput and Redis cost per job.")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--idle-s", type=float, default=12.0)
    parser.add_argument("--redis-url", default=None,
                        help="a loopback Redis to use (default: start a private one)")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--json", dest="json_out", default=None, help="also write JSON here")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="cProfile the drain phase (this process: the worker) into FILE "
                             "(read it with python -m pstats FILE); slows the drain down")
    args = parser.parse_args(argv)

    if args.redis_url:
        check_loopback(args.redis_url)
        result = asyncio.run(run(args.redis_url, args.jobs, args.concurrency, args.idle_s,
                                 args.profile))
    else:
        with private_redis(args.redis_server) as url:
            result = asyncio.run(run(url, args.jobs, args.concurrency, args.idle_s,
                                     args.profile))
    print(render(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
