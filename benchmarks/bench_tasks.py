"""No-op tasks for benchmarks/pools.py; the process pool's children find them here."""

from __future__ import annotations

from typing import Any

from taskflow import App, Task


def register(app: App) -> dict[str, Task[Any, Any]]:
    """The benchmark's tasks, on ``app``."""

    @app.task(name="bench.noop_async")
    async def noop_async(i: int) -> None:
        return None

    @app.task(name="bench.noop_sync")
    def noop_sync(i: int) -> None:
        return None

    return {"async": noop_async, "sync": noop_sync}


app = App("bench-pools")
register(app)
