"""Every exception taskflow raises derives from :class:`TaskflowError`.

The tree::

    TaskflowError
    ├── ConfigurationError      a bad option value, URL or schedule, found where it is given
    ├── EncodeError             arguments or a result that JSON cannot carry
    ├── UnknownTaskError        a task name no registry knows
    ├── BrokerError             the broker failed (wrapped redis errors, embedded server trouble)
    │   └── LockLostError       a worker no longer owns the job it tried to finish
    ├── JobNotFoundError        a job id with no job behind it
    ├── QueueBusyError          a queue operation refused while jobs run (unless forced)
    ├── JobFailedError          ``job.result()`` of a job that ended failed
    ├── JobTimeoutError         an attempt ran past its timeout (also a TimeoutError)
    ├── JobCancelledError       a running job was cancelled
    └── ResultTimeoutError      ``job.result(timeout=...)`` ran out of time (also a TimeoutError)

Signals that are *not* failures and are raised inside a task body to steer the
worker live in :mod:`taskflow.control`: :class:`UnrecoverableError` is the one
exception of this module meant to be raised by user code; it fails the job at
once whatever its attempts.
"""

from __future__ import annotations


class TaskflowError(Exception):
    """Root of every taskflow exception."""


class ConfigurationError(TaskflowError, ValueError):
    """An option, URL or schedule value is invalid; raised where it is given."""


class EncodeError(TaskflowError, TypeError):
    """A value cannot be encoded as JSON (arguments of a call or a task's result)."""


class UnknownTaskError(TaskflowError, LookupError):
    """No task is registered under this name."""


class BrokerError(TaskflowError):
    """The broker (Redis, or the embedded server) failed or is unreachable."""


class LockLostError(BrokerError):
    """The worker's lock on a job expired or was taken; its outcome was not recorded."""


class JobNotFoundError(TaskflowError, LookupError):
    """The job does not exist (never added, or already removed)."""


class QueueBusyError(TaskflowError):
    """The queue (or job) has running jobs and the operation was not forced."""


class JobFailedError(TaskflowError):
    """The job ended in the failed state; ``reason`` and ``traceback`` say why."""

    def __init__(self, job_id: str, reason: str, traceback: str | None = None) -> None:
        super().__init__(f"job {job_id} failed: {reason}")
        self.job_id = job_id
        self.reason = reason
        self.traceback = traceback


class JobTimeoutError(TaskflowError, TimeoutError):
    """An attempt ran past the job's timeout; it fails and may be retried."""


class JobCancelledError(TaskflowError):
    """The job was cancelled while running; it fails without a retry."""


class ResultTimeoutError(TaskflowError, TimeoutError):
    """The job did not finish within the time given to ``result()``."""


class UnrecoverableError(TaskflowError):
    """Raise inside a task to fail its job at once, with no further attempts."""
