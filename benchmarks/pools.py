"""What isolation costs: no-op jobs per second in each pool, at concurrency 8.

    .venv/bin/python benchmarks/pools.py [--jobs 5000] [--concurrency 8]

Starts a private redis-server on a free loopback port, and for each pool enqueues the
jobs in bulk, then drains them with one worker and prints jobs/s and the time per job.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from typing import Any

import bench_tasks
from throughput import private_redis

from taskflow import App

# (pool, which no-op task): coroutines for the loop, plain functions elsewhere
POOLS = (("async", "async"), ("threads", "sync"), ("processes", "sync"))


async def drain(url: str, pool: str, kind: str, jobs: int, concurrency: int) -> float:
    app = App("bench-pools", url, prefix=f"bench-{pool}")
    task: Any = bench_tasks.register(app)[kind]
    await app.aadd_bulk([task.s(i) for i in range(jobs)])
    done = asyncio.Event()
    count = 0

    def completed(*_: object) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    worker = app.worker(concurrency=concurrency, pool=pool)  # type: ignore[arg-type]
    worker.on("completed", completed)
    started = time.perf_counter()
    runner = asyncio.create_task(worker.run())
    await done.wait()
    elapsed = time.perf_counter() - started
    worker.stop()
    await runner
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("needs redis-server or valkey-server on PATH")
    with private_redis(binary) as url:
        print(f"{'pool':<10} {'jobs':>6} {'wall_s':>8} {'jobs/s':>9} {'us/job':>8}")
        for pool, kind in POOLS:
            elapsed = asyncio.run(drain(url, pool, kind, args.jobs, args.concurrency))
            print(f"{pool:<10} {args.jobs:>6} {elapsed:>8.2f} {args.jobs / elapsed:>9,.0f} "
                  f"{elapsed / args.jobs * 1e6:>8.0f}")
    print(f"(concurrency {args.concurrency}; the processes figure includes starting children)")


if __name__ == "__main__":
    main()
