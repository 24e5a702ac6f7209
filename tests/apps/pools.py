"""Tasks for tests/test_pools.py that child processes can import by module name.

The test registers the same tasks on its own App with :func:`register`; a child finds
them here, on this module's App.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from taskflow import App, Task, current_job
from taskflow.control import MoveToDelayed


def burn(seconds: float) -> int:
    """Keep a CPU busy in pure Python for ``seconds``."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += sum(i * i for i in range(200))
    return count


def register(app: App) -> dict[str, Task[Any, Any]]:
    tasks: dict[str, Task[Any, Any]] = {}

    @app.task(name="pools.where", pool="processes")
    def where(tag: str) -> dict[str, Any]:
        job = current_job()
        job.progress(50)
        job.log(f"in child for {tag}")
        return {"tag": tag, "pid": os.getpid()}

    @app.task(name="pools.raises", pool="processes", attempts=1)
    def raises() -> None:
        raise KeyError("missing thing")

    @app.task(name="pools.dies_once", pool="processes", attempts=2)
    def dies_once(how: str) -> str:
        if current_job().attempts_made == 0:
            if how == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            os._exit(3)
        return "survived"

    @app.task(name="pools.pid", pool="processes")
    def pid(i: int) -> int:
        return os.getpid()

    @app.task(name="pools.burn_loop", pool="async")
    def burn_loop(seconds: float) -> int:
        return burn(seconds)

    @app.task(name="pools.burn_thread", pool="threads")
    def burn_thread(seconds: float) -> int:
        return burn(seconds)

    @app.task(name="pools.burn_child", pool="processes")
    def burn_child(seconds: float) -> int:
        return burn(seconds)

    @app.task(name="pools.sleep_child", pool="processes", attempts=1)
    def sleep_child(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    @app.task(name="pools.step_child", pool="processes")
    def step_child(step: int = 0) -> str:
        if step == 0:
            current_job().update_data(step=1)
            raise MoveToDelayed(0.1)
        return f"step {step}"

    @app.task(name="pools.sum_children", pool="processes")
    def sum_children() -> int:
        return sum(current_job().results()) + len(current_job().children_results())

    @app.task(name="pools.async_sleep")
    async def async_sleep(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    for found in (where, raises, dies_once, pid, burn_loop, burn_thread, burn_child,
                  sleep_child, step_child, sum_children, async_sleep):
        tasks[found.name.split(".", 1)[1]] = found
    return tasks


app = App("pools")
TASKS = register(app)
