"""Names of a queue's keys on Redis, as design/REDIS-LAYOUT.md gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PREFIX = "bull"

# The order in which every engine script receives a queue's keys (scripts/_lib.lua).
ENGINE_SUFFIXES = (
    "wait", "active", "prioritized", "delayed", "completed", "failed", "events", "meta",
    "marker", "pc", "id", "stalled", "waiting-children", "stalled-check",
)


@dataclass(frozen=True)
class QueueKeys:
    """All key names of one queue under one prefix."""

    queue: str
    prefix: str = DEFAULT_PREFIX
    engine: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        base = f"{self.prefix}:{self.queue}:"
        object.__setattr__(self, "engine", tuple(base + s for s in ENGINE_SUFFIXES))

    @property
    def base(self) -> str:
        """Prefix of every key of the queue, job keys included: ``bull:<queue>:``."""
        return f"{self.prefix}:{self.queue}:"

    def key(self, suffix: str) -> str:
        """The queue key with this suffix (``wait``, ``events``, ...)."""
        return self.base + suffix

    def job(self, job_id: str) -> str:
        """The hash of one job."""
        return self.base + job_id
