"""Operations over many jobs run in bounded batches: the server keeps answering others."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from taskflow import App

pytestmark = pytest.mark.anyio

JOBS = 200_000


def _store_completed_jobs(raw: redis.Redis, prefix: str, count: int) -> None:
    """Write ``count`` completed jobs directly, as the finish script leaves them."""
    base = f"{prefix}:big:"
    finished_ms = int(time.time() * 1000) - 60_000
    pipe = raw.pipeline(transaction=False)
    for i in range(1, count + 1):
        pipe.hset(f"{base}{i}", mapping={"name": "noop", "data": "{}", "opts": "{}",
                                         "returnvalue": "null", "finishedOn": finished_ms})
        if i % 5000 == 0:
            pipe.zadd(f"{base}completed", {str(j): finished_ms for j in range(i - 4999, i + 1)})
            pipe.execute()
    pipe.execute()


PROBE = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
client.ping()
print("ready", flush=True)
worst = []
while not sys.stdin.closed:
    started = time.perf_counter()
    client.ping()
    worst.append((time.perf_counter() - started) * 1000)
    time.sleep(0.001)
    if len(worst) % 100 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
print(" ".join(f"{x:.3f}" for x in worst), flush=True)
"""


class PingProbe:
    """Another client, in its own process, PINGing the server in a loop."""

    def __init__(self, url: str) -> None:
        code = "import select\n" + PROBE
        self.proc = subprocess.Popen([sys.executable, "-c", code, url], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.latencies_ms: list[float] = []

    def __enter__(self) -> PingProbe:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        self.latencies_ms = [float(x) for x in out.split()]


async def test_cleaning_200k_jobs_never_blocks_the_server(
    aapp: App, raw: redis.Redis, server_url: str
) -> None:
    _store_completed_jobs(raw, aapp.prefix, JOBS)
    queue = aapp.queue("big")
    with PingProbe(server_url) as probe:
        removed = await queue.aclean(grace_s=1)
    assert removed == JOBS
    assert raw.zcard(f"{aapp.prefix}:big:completed") == 0
    assert not raw.exists(f"{aapp.prefix}:big:{JOBS}")
    latencies = sorted(probe.latencies_ms)
    p99 = latencies[int(len(latencies) * 0.99)]
    assert len(latencies) > 50
    assert p99 < 25, f"p99 PING {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    assert latencies[-1] < 100, f"max PING {latencies[-1]:.1f} ms"
