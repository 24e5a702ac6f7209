"""Signals a task raises to steer its own job. They are not failures: no attempt is
counted, no retry follows, nothing lands in the failed set.

- :class:`MoveToDelayed`: stop here and run the job again after a delay (a step job
  continuing later). Save what the next run needs with ``current_job().update_data()``.
- :class:`WaitForChildren`: stop here and run the job again once the children added with
  ``current_job().add_children()`` are done.

They derive from BaseException, so a task's own ``except Exception`` doesn't swallow them.
"""

from __future__ import annotations


class ControlSignal(BaseException):
    """Base of the signals a task raises to steer its job."""


class MoveToDelayed(ControlSignal):
    """Run this job again after ``delay_s`` seconds, without counting an attempt."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        if not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0: {delay_s!r}")
        self.delay_s = float(delay_s)


class WaitForChildren(ControlSignal):
    """Run this job again once its pending children are done (at once if none are)."""
