"""taskflow: a Python job queue with BullMQ's Redis engine under a Celery-style API."""

from taskflow.app import App
from taskflow.control import MoveToDelayed, WaitForChildren
from taskflow.errors import (
    BrokerError,
    ConfigurationError,
    EncodeError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    LockLostError,
    QueueBusyError,
    ResultTimeoutError,
    TaskflowError,
    UnknownTaskError,
    UnrecoverableError,
)
from taskflow.events import QueueEvent, QueueEvents
from taskflow.flows import Group, GroupResult, chain, chord, group
from taskflow.job import Job, JobContext, JobInfo, JobTree, current_job
from taskflow.options import Backoff, JobOptions, Keep
from taskflow.queue import Queue
from taskflow.schedule import ScheduleOptions, SchedulerInfo, Schedulers
from taskflow.task import BoundTask, Signature, Task
from taskflow.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
    "Backoff",
    "BoundTask",
    "BrokerError",
    "ConfigurationError",
    "EncodeError",
    "Group",
    "GroupResult",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobInfo",
    "JobNotFoundError",
    "JobOptions",
    "JobTimeoutError",
    "JobTree",
    "Keep",
    "LockLostError",
    "MoveToDelayed",
    "Queue",
    "QueueBusyError",
    "QueueEvent",
    "QueueEvents",
    "ResultTimeoutError",
    "ScheduleOptions",
    "SchedulerInfo",
    "Schedulers",
    "Signature",
    "Task",
    "TaskflowError",
    "UnknownTaskError",
    "UnrecoverableError",
    "WaitForChildren",
    "Worker",
    "__version__",
    "chain",
    "chord",
    "current_job",
    "group",
]
