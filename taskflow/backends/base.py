"""The broker contract: the operations the engine needs, whatever server runs them.

Python above this layer never issues raw server commands; each operation here
that changes a job's state is one atomic script on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from taskflow.keys import QueueKeys


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job to add: its payload already encoded."""

    name: str
    data: str
    opts: str
    job_id: str = ""
    delay_ms: int = 0
    priority: int = 0
    lifo: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the finish script records it.

    ``kind`` is ``completed``, ``failed`` (final), ``exhausted`` (final, after the
    last attempt) or ``retry`` (again after ``retry_delay_ms``).
    """

    job_id: str
    kind: str
    value: str
    attempts_made: int
    stacktrace: str = ""
    retry_delay_ms: int = 0
    keep_count: int = -1
    keep_age_s: float = -1
    parent_key: str = ""
    parent_policy: str = "none"


@dataclass(frozen=True, slots=True)
class Taken:
    """The result of one finish-and-fetch round."""

    statuses: list[int]
    jobs: list[tuple[str, dict[str, str]]]
    next_delayed_ms: int


class Broker(Protocol):
    """What a broker offers the engine. Implemented by :class:`RedisBroker`."""

    prefix: str

    def keys(self, queue: str) -> QueueKeys: ...

    async def add_jobs(self, queue: str, jobs: list[NewJob]) -> list[tuple[str, bool]]: ...

    async def finish_fetch(
        self, queue: str, token: str, lock_ms: int, fetch: int, worker: str,
        outcomes: list[Outcome], metrics_points: int = 0,
    ) -> Taken: ...

    async def check_stalled(
        self, queue: str, max_stalled: int, interval_ms: int
    ) -> tuple[list[str], list[str]] | None: ...

    async def close(self) -> None: ...
