"""Flows of 1,000 and 10,000 children: time to add the tree, and to resolve it (every
child run, then the parent), with another client's PING latency meanwhile (p99, max).

    .venv/bin/python benchmarks/flows.py [--sizes 1000,10000] [--concurrency 64]

Runs on a private redis-server on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time

from throughput import private_redis

from taskflow import App, current_job

PING_LOOP = """
import select, sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
client.ping()
print("ready", flush=True)
worst = []
while not select.select([sys.stdin], [], [], 0.001)[0]:
    started = time.perf_counter()
    client.ping()
    worst.append((time.perf_counter() - started) * 1000)
worst.sort()
print(f"{worst[-1]:.2f} {worst[int(len(worst) * 0.99)]:.2f}", flush=True)
"""


class Pinger:
    """Another client, in a process of its own, PINGing in a loop: its worst and p99."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PING_LOOP, url], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.worst_ms = self.p99_ms = 0.0

    def __enter__(self) -> Pinger:
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        return self

    def __exit__(self, *_: object) -> None:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        self.worst_ms, self.p99_ms = (float(x) for x in out.split())


async def one_flow(url: str, children: int, concurrency: int
                   ) -> tuple[float, float, float, float]:
    app = App("bench-flows", url, prefix=f"bench-flow-{children}")

    @app.task(name="bench.leaf")
    async def leaf(i: int) -> int:
        return i

    @app.task(name="bench.total")
    def total() -> int:
        return sum(current_job().results())

    with Pinger(url) as pinger:
        started = time.perf_counter()
        root = await total.s(children=[leaf.s(i) for i in range(children)]).adelay()
        added = time.perf_counter() - started
        worker = app.worker(concurrency=concurrency, pool="async")
        runner = asyncio.create_task(worker.run())
        started = time.perf_counter()
        assert await root.aresult(timeout=600) == sum(range(children))
        resolved = time.perf_counter() - started
        worker.stop()
        await runner
    return added, resolved, pinger.p99_ms, pinger.worst_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("needs redis-server or valkey-server on PATH")
    with private_redis(binary) as url:
        print(f"{'children':>9} {'add_s':>7} {'resolve_s':>10} {'jobs/s':>8} "
              f"{'ping_p99_ms':>12} {'ping_max_ms':>12}")
        for size in (int(s) for s in args.sizes.split(",")):
            added, resolved, p99, worst = asyncio.run(one_flow(url, size, args.concurrency))
            print(f"{size:>9} {added:>7.3f} {resolved:>10.3f} {(size + 1) / resolved:>8,.0f} "
                  f"{p99:>12.2f} {worst:>12.2f}")


if __name__ == "__main__":
    main()
