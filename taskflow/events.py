"""Queue events: what happens to jobs, read from each queue's events stream.

Every script appends to ``<prefix>:<queue>:events`` (added, waiting, active, progress,
completed, failed, retries-exhausted, delayed, stalled, drained, paused, resumed, ...).
:class:`QueueEvents` reads those streams for one queue or several, as async iteration
or callbacks, and resumes from the last entry it saw after a broken connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskflow import _json
from taskflow.errors import BrokerError

if TYPE_CHECKING:
    from taskflow.app import App

logger = logging.getLogger(__name__)

RECONNECT_DELAY_S = 0.5


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """One entry of a queue's events stream."""

    queue: str
    id: str
    event: str
    job_id: str | None
    fields: dict[str, str] = field(repr=False)

    @property
    def returnvalue(self) -> Any:
        """The decoded result of a ``completed`` event."""
        return _json.loads(self.fields.get("returnvalue"))

    @property
    def data(self) -> Any:
        """The decoded value of a ``progress`` event."""
        return _json.loads(self.fields.get("data"))

    @property
    def failed_reason(self) -> str | None:
        return self.fields.get("failedReason")


class QueueEvents:
    """Listen to the events of one or more queues: ``async for event in events``, or
    callbacks registered with :meth:`on` and run by ``await events.run()``.

    ``since`` is the stream id to start after: ``"$"`` (default) for new events only,
    ``"0"`` for everything still in the stream, or a ``last_ids`` value saved earlier.
    """

    def __init__(self, app: App, queues: Sequence[str] | str | None = None, *,
                 since: str | dict[str, str] = "$", block_ms: int = 5000) -> None:
        names = [queues] if isinstance(queues, str) else list(queues or app.queues)
        self.app = app
        self.queues = names
        # A blocking read must end well within the connection's read timeout.
        self.block_ms = max(1, min(block_ms, 20_000))
        if isinstance(since, dict):
            self.last_ids = {q: since.get(q, "$") for q in names}
        else:
            self.last_ids = dict.fromkeys(names, since)
        self._callbacks: dict[str, list[Callable[[QueueEvent], Any]]] = defaultdict(list)
        self._closed = False

    def on(self, event: str, callback: Callable[[QueueEvent], Any]) -> None:
        """Call ``callback(event)`` for every event of that name (``"*"`` for all)."""
        self._callbacks[event].append(callback)

    def close(self) -> None:
        """Stop iteration (and :meth:`run`) after the read in progress."""
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[QueueEvent]:
        await self._pin_start()
        while not self._closed:
            for event in await self._read_batch():
                yield event

    async def run(self) -> None:
        """Dispatch events to the callbacks until :meth:`close`."""
        async for event in self:
            for callback in [*self._callbacks.get(event.event, ()), *self._callbacks["*"]]:
                try:
                    result = callback(event)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    logger.exception("queue events callback %r raised", callback)

    async def wait_for(self, job_id: str, events: Sequence[str] = ("completed", "failed"),
                       timeout: float | None = None) -> QueueEvent:
        """The next event of ``job_id`` named in ``events`` (TimeoutError after ``timeout``)."""

        async def first() -> QueueEvent:
            async for event in self:
                if event.job_id == job_id and event.event in events:
                    return event
            raise asyncio.CancelledError

        return await asyncio.wait_for(first(), timeout)

    async def _pin_start(self) -> None:
        # "$" means "after the newest entry now"; pin it so a reconnect loses nothing.
        broker = self.app.broker()
        for queue, last in self.last_ids.items():
            if last == "$":
                self.last_ids[queue] = await broker.last_event_id(queue)

    async def _read_batch(self) -> list[QueueEvent]:
        broker = self.app.broker()
        keys = broker.keys
        streams = {keys(q).key("events"): self.last_ids[q] for q in self.queues}
        by_stream = {keys(q).key("events"): q for q in self.queues}
        try:
            rows = await broker.read_events(streams, self.block_ms)
        except BrokerError as exc:
            logger.warning("reading events failed (%s); resuming in %.1f s", exc,
                           RECONNECT_DELAY_S)
            await asyncio.sleep(RECONNECT_DELAY_S)
            return []
        found: list[QueueEvent] = []
        for stream, entries in rows:
            queue = by_stream[stream]
            for entry_id, fields in entries:
                self.last_ids[queue] = entry_id
                found.append(QueueEvent(queue, entry_id, fields.get("event", ""),
                                        fields.get("jobId"), fields))
        return found
