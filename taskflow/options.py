"""Job options: how a job is queued, retried and kept, validated where they are given.

Options are stored on the job under BullMQ's names (``attempts``, ``delay``,
``priority``, ``lifo``, ``jobId``, ``backoff``, ``removeOnComplete``,
``removeOnFail``), so Node workers read taskflow jobs and the other way round.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from taskflow.errors import ConfigurationError

MAX_PRIORITY = 2**21 - 1  # BullMQ's limit: beyond it the score loses FIFO order

BackoffKind = Literal["fixed", "exponential"]
ParentPolicy = Literal["fail", "continue", "ignore", "remove"]
# How BullMQ stores each failure policy of a child in its options.
POLICY_FLAGS: dict[str, str] = {
    "fail": "fpof", "continue": "cpof", "ignore": "idof", "remove": "rdof"}


def _check_seconds(what: str, value: object) -> None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value < 0:  # type: ignore[arg-type,operator]
        raise ConfigurationError(f"{what} must be a finite number of seconds >= 0: {value!r}")


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be an int within [{low}, {high}]: {value!r}")


@dataclass(frozen=True)
class Backoff:
    """Wait before a retry: ``delay_s`` each time (fixed) or doubling per attempt
    (exponential); ``jitter`` in [0, 1] shortens each wait by up to that fraction at random."""

    kind: BackoffKind = "exponential"
    delay_s: float = 1.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential"):
            raise ConfigurationError(
                f"backoff kind must be 'fixed' or 'exponential': {self.kind!r}")
        _check_seconds("backoff delay", self.delay_s)
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"backoff jitter must be within [0, 1]: {self.jitter!r}")

    def wait_ms(self, attempts_made: int) -> int:
        """Milliseconds to wait before the next attempt, after ``attempts_made`` attempts."""
        base = self.delay_s * 1000.0
        if self.kind == "exponential":
            base *= 2 ** max(0, attempts_made - 1)
        if self.jitter:
            base *= 1.0 - self.jitter * random.random()
        return round(base)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "delay": round(self.delay_s * 1000)}
        if self.jitter:
            out["jitter"] = self.jitter
        return out

    @classmethod
    def parse(cls, value: object) -> Backoff | None:
        """Accept a Backoff, a number of seconds (fixed), ``(kind, delay_s[, jitter])``,
        or BullMQ's ``{"type": ..., "delay": ms}``."""
        if value is None or isinstance(value, Backoff):
            return value
        if isinstance(value, bool):
            raise ConfigurationError(f"backoff must be seconds, a tuple or a Backoff: {value!r}")
        if isinstance(value, int | float):
            return cls("fixed", float(value))
        try:
            if isinstance(value, tuple | list) and 2 <= len(value) <= 3:
                return cls(*value)
            if isinstance(value, dict) and "type" in value:
                delay_ms = float(value.get("delay") or 0)
                return cls(value["type"], delay_ms / 1000.0, float(value.get("jitter") or 0.0))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"bad backoff {value!r}: {exc}") from exc
        raise ConfigurationError(f"backoff must be seconds, a tuple or a Backoff: {value!r}")


@dataclass(frozen=True)
class Keep:
    """Which finished jobs stay in Redis: the last ``count`` and/or those younger than
    ``age_s`` (None = no limit of that kind). ``Keep()`` keeps all; ``Keep(count=0)`` none."""

    count: int | None = None
    age_s: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and (isinstance(self.count, bool) or self.count < 0):
            raise ConfigurationError(f"keep count must be an int >= 0: {self.count!r}")
        if self.age_s is not None:
            _check_seconds("keep age", self.age_s)

    @classmethod
    def parse(cls, value: object) -> Keep:
        """Accept True (all), False (none), an int N (last N), a timedelta (younger than),
        a Keep, or BullMQ's removeOn* forms (``{"count": n, "age": s}``)."""
        if isinstance(value, Keep):
            return value
        if value is True:
            return cls()
        if value is False:
            return cls(count=0)
        if isinstance(value, int):
            return cls(count=value)
        if isinstance(value, timedelta):
            return cls(age_s=value.total_seconds())
        if isinstance(value, dict):
            try:
                return cls(count=value.get("count"), age_s=value.get("age"))
            except TypeError as exc:
                raise ConfigurationError(f"bad keep {value!r}: {exc}") from exc
        raise ConfigurationError(
            f"keep must be True, False, an int, a timedelta or a Keep: {value!r}"
        )

    @classmethod
    def from_bullmq(cls, remove_on: object) -> Keep:
        """Read a stored ``removeOnComplete`` / ``removeOnFail`` value."""
        if remove_on is None or remove_on is False:
            return cls()
        if remove_on is True:
            return cls(count=0)
        if isinstance(remove_on, int):
            return cls(count=remove_on)
        if isinstance(remove_on, dict):
            return cls(count=remove_on.get("count"), age_s=remove_on.get("age"))
        return cls()

    def to_bullmq(self) -> object:
        if self.count is None and self.age_s is None:
            return False
        if self.count == 0:
            return True
        if self.age_s is None:
            return self.count
        age = self.age_s
        out: dict[str, Any] = {"age": int(age) if float(age).is_integer() else age}
        if self.count is not None:
            out["count"] = self.count
        return out

    def script_args(self) -> tuple[int, float]:
        """(count, age) as the finish script takes them: -1 for no limit."""
        count = -1 if self.count is None else self.count
        age = -1 if self.age_s is None else self.age_s
        return count, age


DEFAULT_KEEP_COMPLETED = Keep(count=1000, age_s=24 * 3600.0)
DEFAULT_KEEP_FAILED = Keep(count=10000, age_s=7 * 24 * 3600.0)


@dataclass(frozen=True)
class JobOptions:
    """Options of one job; every field is validated when the options are made."""

    delay_s: float = 0.0
    priority: int = 0
    lifo: bool = False
    job_id: str | None = None
    attempts: int = 1
    backoff: Backoff | None = None
    # None: the worker's retention (by default DEFAULT_KEEP_COMPLETED / _FAILED)
    keep_completed: Keep | None = None
    keep_failed: Keep | None = None
    keep_logs: int | None = None
    on_failure: ParentPolicy = "fail"
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.on_failure not in POLICY_FLAGS:
            raise ConfigurationError(
                f"on_failure must be one of {sorted(POLICY_FLAGS)}: {self.on_failure!r}")
        _check_seconds("delay", self.delay_s)
        if self.timeout_s is not None:
            _check_seconds("timeout", self.timeout_s)
            if self.timeout_s == 0:
                raise ConfigurationError("timeout must be more than 0 seconds (None: no limit)")
        _check_int("priority", self.priority, 0, MAX_PRIORITY)
        _check_int("attempts", self.attempts, 1, 1_000_000)
        if self.keep_logs is not None:
            _check_int("keep_logs", self.keep_logs, 0, 2**31)
        if self.job_id is not None:
            check_job_id(self.job_id)

    def merge(self, **changes: Any) -> JobOptions:
        """A copy with ``changes`` applied; accepts the loose forms of backoff and keep."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ConfigurationError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        if "backoff" in changes:
            changes["backoff"] = Backoff.parse(changes["backoff"])
        for name in ("keep_completed", "keep_failed"):
            if name in changes:
                changes[name] = Keep.parse(changes[name])
        for name in ("delay_s", "timeout_s"):
            if isinstance(changes.get(name), timedelta):
                changes[name] = changes[name].total_seconds()
        return replace(self, **changes)

    @property
    def delay_ms(self) -> int:
        return round(self.delay_s * 1000)

    def to_bullmq(self) -> dict[str, Any]:
        """The ``opts`` JSON object stored on the job."""
        # Defaults stay out: a small opts keeps the job's hash in Redis's compact encoding.
        out: dict[str, Any] = {}
        if self.attempts != 1:
            out["attempts"] = self.attempts
        if self.delay_s:
            out["delay"] = self.delay_ms
        if self.priority:
            out["priority"] = self.priority
        if self.lifo:
            out["lifo"] = True
        if self.job_id is not None:
            out["jobId"] = self.job_id
        if self.backoff is not None:
            out["backoff"] = self.backoff.to_json()
        if self.keep_completed is not None:
            out["removeOnComplete"] = self.keep_completed.to_bullmq()
        if self.keep_failed is not None:
            out["removeOnFail"] = self.keep_failed.to_bullmq()
        if self.keep_logs is not None:
            out["kl"] = self.keep_logs
        if self.timeout_s is not None:
            out["timeout"] = round(self.timeout_s * 1000)
        if self.on_failure != "fail":  # flows store the default ("fpof") on every child
            out[POLICY_FLAGS[self.on_failure]] = True
        return out

    @classmethod
    def from_bullmq(cls, opts: dict[str, Any]) -> JobOptions:
        """Read the stored ``opts`` of a job, whoever added it (taskflow or Node)."""
        return cls(
            delay_s=float(opts.get("delay") or 0) / 1000.0,
            priority=int(opts.get("priority") or 0),
            lifo=bool(opts.get("lifo")),
            attempts=max(1, int(opts.get("attempts") or 1)),
            backoff=_backoff_from_bullmq(opts.get("backoff")),
            keep_completed=_keep_from_bullmq(opts, "removeOnComplete"),
            keep_failed=_keep_from_bullmq(opts, "removeOnFail"),
            keep_logs=opts.get("kl"),
            on_failure=_policy_from_bullmq(opts),
            timeout_s=float(opts["timeout"]) / 1000.0 if opts.get("timeout") else None,
        )


def _keep_from_bullmq(opts: dict[str, Any], name: str) -> Keep | None:
    return Keep.from_bullmq(opts[name]) if name in opts else None


def _policy_from_bullmq(opts: dict[str, Any]) -> ParentPolicy:
    policies: tuple[ParentPolicy, ...] = ("fail", "continue", "ignore", "remove")
    for policy in policies:
        if opts.get(POLICY_FLAGS[policy]):
            return policy
    return "fail"


def _backoff_from_bullmq(value: object) -> Backoff | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Backoff("fixed", value / 1000.0)
    if isinstance(value, dict) and value.get("type") in ("fixed", "exponential"):
        return Backoff.parse(value)
    return None


# A job's hash is "<prefix>:<queue>:<id>", beside the queue's own keys: an id equal to
# one of their names would overwrite that key.
RESERVED_IDS = frozenset({
    "wait", "active", "prioritized", "delayed", "completed", "failed", "events", "meta",
    "marker", "pc", "id", "stalled", "waiting-children", "stalled-check", "limiter",
    "repeat", "paused", "metrics", "flows-staging", "cancel",
})


def check_job_id(job_id: object) -> str:
    """A custom job id is a non-empty string, not a bare integer, without ':' or spaces,
    and not the name of one of the queue's own keys."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ConfigurationError(f"job_id must be a non-empty string: {job_id!r}")
    if any(c.isspace() for c in job_id):
        raise ConfigurationError(f"job_id may not contain white space: {job_id!r}")
    if job_id in RESERVED_IDS:
        raise ConfigurationError(f"job_id {job_id!r} is the name of one of the queue's keys")
    if job_id.isdigit():
        raise ConfigurationError(f"job_id may not be a bare integer: {job_id!r}")
    if ":" in job_id:
        raise ConfigurationError(f"job_id may not contain ':': {job_id!r}")
    return job_id
