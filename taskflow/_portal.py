"""Run the async engine from sync code: one event loop in a daemon thread per process.

``task.delay()`` in a Django view or a script hands its coroutine to this loop
and waits for the answer, so there is one implementation of every operation.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0


def _start() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    threading.Thread(target=serve, name="taskflow-portal", daemon=True).start()
    ready.wait()
    atexit.register(_stop, loop)
    return loop


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)


def portal_loop() -> asyncio.AbstractEventLoop:
    """The portal's loop, started on first use (and again in a forked child)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():
            _loop, _pid = _start(), os.getpid()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run ``coro`` on the portal loop and return its result (or raise its exception)."""
    loop = portal_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("a sync taskflow call was made on taskflow's own portal loop")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)
