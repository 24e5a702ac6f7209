"""taskflow: a Python job queue with BullMQ's Redis engine under a Celery-style API."""

from taskflow.app import App
from taskflow.errors import (
    BrokerError,
    ConfigurationError,
    EncodeError,
    JobFailedError,
    JobNotFoundError,
    LockLostError,
    QueueBusyError,
    ResultTimeoutError,
    TaskflowError,
    UnknownTaskError,
    UnrecoverableError,
)
from taskflow.events import QueueEvent, QueueEvents
from taskflow.job import Job, JobContext, JobInfo, current_job
from taskflow.options import Backoff, JobOptions, Keep
from taskflow.queue import Queue
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
    "Job",
    "JobContext",
    "JobFailedError",
    "JobInfo",
    "JobNotFoundError",
    "JobOptions",
    "Keep",
    "LockLostError",
    "Queue",
    "QueueBusyError",
    "QueueEvent",
    "QueueEvents",
    "ResultTimeoutError",
    "Signature",
    "Task",
    "TaskflowError",
    "UnknownTaskError",
    "UnrecoverableError",
    "Worker",
    "__version__",
    "current_job",
]
