"""Metrics: per-minute completed and failed counts kept in Redis, and a Prometheus export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskflow import _portal

if TYPE_CHECKING:
    from taskflow.app import App

OUTCOMES = ("completed", "failed")


@dataclass(frozen=True)
class Metrics:
    """Finished jobs of one outcome: the total since metrics began, and one count per
    minute, newest first (the minute in progress is not in the list yet)."""

    total: int
    per_minute: list[int]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def aprometheus_text(app: App, queues: Sequence[str] | None = None) -> str:
    """The queues' job counts and finished totals in Prometheus text format."""
    broker = app.broker()
    names = list(queues or app.queues)
    lines = ["# HELP taskflow_jobs Jobs per queue and state.", "# TYPE taskflow_jobs gauge"]
    for queue in names:
        for state, count in (await broker.counts(queue)).items():
            lines.append(f'taskflow_jobs{{queue="{_label(queue)}",state="{state}"}} {count}')
    lines += ["# HELP taskflow_jobs_finished_total Jobs finished, by outcome.",
              "# TYPE taskflow_jobs_finished_total counter"]
    last_minute = ["# HELP taskflow_jobs_finished_last_minute Jobs finished in the last "
                   "full minute.", "# TYPE taskflow_jobs_finished_last_minute gauge"]
    for queue in names:
        for outcome in OUTCOMES:
            total, points = await broker.metrics(queue, outcome, 1)
            labels = f'queue="{_label(queue)}",outcome="{outcome}"'
            lines.append(f"taskflow_jobs_finished_total{{{labels}}} {total}")
            last_minute.append(
                f"taskflow_jobs_finished_last_minute{{{labels}}} {points[0] if points else 0}")
    return "\n".join(lines + last_minute) + "\n"


def prometheus_text(app: App, queues: Sequence[str] | None = None) -> str:
    """Like :func:`aprometheus_text`, from sync code."""
    return _portal.run(aprometheus_text(app, queues))
