"""taskflow peer for the side-by-side harness in /work/shared/bench/peers (run.py).

Same contract as the harness's template peer_taskflow.py: read the config with
peerlib.config(), print "@@mark" lines at the phase boundaries (outside the
timed regions), print one JSON result line. Run it through the harness::

    cd /work/shared/bench/peers && TASKFLOW_PIP="-e /work/main" \
        TASKFLOW_PEER_SCRIPT=/work/main/benchmarks/peer_taskflow.py \
        python3 run.py --peers taskflow,bullmq_node,taskiq --out /tmp/peers-taskflow.json

or by hand against a loopback Redis you started (peerlib must be importable)::

    REDIS_URL=redis://127.0.0.1:6390/0 PYTHONPATH=/work/shared/bench/peers \
        .venv/bin/python benchmarks/peer_taskflow.py 20000 32

Workload: N no-op jobs queued with ``App.aadd_bulk`` in chunks of 1000 (one
``add`` script call per chunk); then ONE in-process worker, concurrency C,
``pool="async"``, and the N-th completion is seen by the worker's ``completed``
listener, which fires after the outcome is recorded in Redis (taskflow reports
an outcome in the finish-and-fetch call that follows the job's end). Library
defaults everywhere else (keep the last 1000 completed jobs, 30 s locks, ...).
"""
import asyncio
import sys
import time
import traceback

from peerlib import Done, chunks, config, emit, mark, version

CHUNK = 1000
ENQUEUE_MODE = "App.aadd_bulk in chunks of 1000 (one add script call per chunk)"
COMPLETION = "Worker 'completed' listener (after the outcome is recorded in Redis)"

_state = {}


async def make_client(cfg):
    """Return whatever object enqueues jobs (connected, warmed up)."""
    from taskflow import App

    app = App("bench", cfg.redis_url)

    @app.task(name="bench.noop")
    async def noop(i: int) -> None:
        return None

    await app.broker().ping()  # connect before the timer starts
    _state.update(app=app, noop=noop)
    return app


async def enqueue_chunk(client, first_index: int, k: int):
    """Enqueue k no-op jobs (arguments first_index .. first_index+k-1)."""
    noop = _state["noop"]
    await client.aadd_bulk([noop.s(i) for i in range(first_index, first_index + k)])


async def start_worker(cfg, on_complete):
    """Start one worker with concurrency cfg.c in this event loop; call
    on_complete() once per completed job.  Return an async callable that stops
    the worker."""
    worker = _state["app"].worker(concurrency=cfg.c, pool="async")
    worker.on("completed", on_complete)
    running = asyncio.create_task(worker.run())

    async def stop():
        worker.stop()
        await asyncio.wait_for(running, 60)

    return stop


async def main(cfg):
    try:
        client = await make_client(cfg)
    except NotImplementedError:
        emit(peer=cfg.peer, version=version("taskflow"), status="skipped",
             notes="skipped: peer_taskflow.py adapter functions not filled in yet")
        return
    mark("enqueue_start")
    te0 = time.perf_counter()
    i = 0
    for k in chunks(cfg.n, CHUNK):
        await enqueue_chunk(client, i, k)
        i += k
    te1 = time.perf_counter()
    mark("enqueue_end")

    done = Done(cfg.n)
    mark("drain_start")
    td0 = time.perf_counter()
    stop = await start_worker(cfg, done.hit)
    ok = await done.wait(cfg.remaining())
    mark("drain_end")
    await stop()
    res = dict(peer=cfg.peer, library="taskflow", version=version("taskflow"),
               n=cfg.n, concurrency=cfg.c, enqueue_s=te1 - te0, enqueue_mode=ENQUEUE_MODE,
               completion=COMPLETION, status="ok" if ok else "timeout",
               completed=done.count, harness_cmds=0,
               notes="" if ok else f"only {done.count}/{cfg.n} completed before the time limit")
    if ok:
        res.update(drain_s=done.t_last - td0, startup_s=done.t_first - td0)
    emit(**res)


if __name__ == "__main__":
    cfg = config()
    try:
        asyncio.run(main(cfg))
    except Exception as e:
        traceback.print_exc()
        emit(peer=cfg.peer, version=version("taskflow"), status="error",
             notes=f"error: {e!r}"[:200])
        sys.exit(1)
