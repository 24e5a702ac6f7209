"""The ``taskflow`` command: run workers, look at and steer queues, the embedded server.

Exit codes: 0 done, 1 the operation failed or was refused, 2 bad usage, 3 no such
queue or job, 4 the broker can't be reached.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
import orjson

from taskflow import _portal
from taskflow.app import App
from taskflow.backends import embedded
from taskflow.errors import (
    BrokerError,
    ConfigurationError,
    JobNotFoundError,
    QueueBusyError,
    TaskflowError,
)
from taskflow.events import QueueEvents
from taskflow.job import JobInfo
from taskflow.keys import DEFAULT_PREFIX
from taskflow.metrics import aprometheus_text
from taskflow.queue import STATES, Queue
from taskflow.schedule import SchedulerInfo, Schedulers

logger = logging.getLogger(__name__)

T = TypeVar("T")
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4


class CliError(click.ClickException):
    """A clear message and a documented exit code instead of a traceback."""

    exit_code = 1


class NotFound(CliError):
    exit_code = EXIT_NOT_FOUND


class Unreachable(CliError):
    exit_code = EXIT_UNREACHABLE


def load_app(target: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) and return the App."""
    module_name, _, attr = target.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, attr or "app", None)
    if not isinstance(found, App):
        raise click.BadParameter(f"{target!r} is not a taskflow App")
    return found


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning taskflow errors into messages and exit codes."""
    try:
        return _portal.run(coro)
    except (JobNotFoundError, LookupError) as exc:
        raise NotFound(str(exc)) from exc
    except BrokerError as exc:
        raise Unreachable(f"broker unreachable or failing: {exc}") from exc
    except (ConfigurationError, QueueBusyError, TaskflowError) as exc:
        raise CliError(str(exc)) from exc


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


class Context:
    """The app the command works on: from ``--app``, else one made from ``--url``."""

    def __init__(self, app_target: str | None, url: str | None, prefix: str) -> None:
        self.app_target = app_target
        self.url = url
        self.prefix = prefix
        self._app: App | None = None

    @property
    def app(self) -> App:
        if self._app is None:
            try:
                self._app = (load_app(self.app_target) if self.app_target
                             else App("taskflow-cli", self.url, prefix=self.prefix))
            except ConfigurationError as exc:
                raise click.UsageError(str(exc)) from exc
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()

    def queue(self, name: str, must_exist: bool = True) -> Queue:
        queue = self.app.queue(name)
        if must_exist and name not in run(self._existing()):
            raise NotFound(f"no queue named {name!r} under prefix {self.app.prefix!r}")
        return queue

    async def _existing(self) -> list[str]:
        return await discover_queues(self.app)


async def discover_queues(app: App) -> list[str]:
    """Queues with data under the app's prefix (by their meta, id or events keys)."""
    broker = app.broker()
    found: set[str] = set(app.queues) if app.tasks else set()
    head = f"{app.prefix}:"

    async def scan() -> None:
        for suffix in ("meta", "id", "events"):
            async for key in broker.client.scan_iter(match=f"{head}*:{suffix}", count=1000):
                name = str(key)[len(head):-len(suffix) - 1]
                if ":" not in name:
                    found.add(name)

    await broker.call("listing queues", scan)
    return sorted(found)


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.option("--app", "app_target", envvar="TASKFLOW_APP", default=None,
              help="module:attribute of your App (else --url).")
@click.option("--url", envvar="TASKFLOW_BROKER_URL", default=None,
              help="Broker URL (default: the embedded server).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Key prefix.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def main(ctx: click.Context, app_target: str | None, url: str | None, prefix: str,
         log_level: str) -> None:
    """taskflow: a job queue on Redis."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    ctx.obj = Context(app_target, url, prefix)
    ctx.call_on_close(ctx.obj.close)


# -- workers ----------------------------------------------------------------------------


@main.command()
@click.argument("target")
@click.option("-c", "--concurrency", default=10, show_default=True, help="Jobs run at once.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: the app's).")
@click.option("--pool", default="threads", show_default=True,
              type=click.Choice(["threads", "async", "processes"]),
              help="Where plain functions run (a task's own pool option wins).")
@click.option("--max-jobs-per-child", default=None, type=int,
              help="Recycle a child process after this many jobs (processes pool).")
@click.option("--max-memory-mb", default=None, type=float,
              help="Recycle a child process above this resident size (processes pool).")
@click.option("--grace", "grace_s", default=30.0, show_default=True,
              help="Seconds running jobs get to finish on SIGTERM/SIGINT.")
@click.option("--lock-ms", default=30_000, show_default=True, help="Job lock duration.")
@click.option("--stalled-interval-ms", default=30_000, show_default=True,
              help="How often the stalled check runs.")
@click.option("--max-stalled", default=1, show_default=True,
              help="Stalls a job may have before it fails.")
def worker(target: str, concurrency: int, queues: str | None, pool: str,
           max_jobs_per_child: int | None, max_memory_mb: float | None, grace_s: float,
           lock_ms: int, stalled_interval_ms: int, max_stalled: int) -> None:
    """Run a worker for the app at TARGET (module:attribute)."""
    app = load_app(target)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        runner = app.worker(names, concurrency=concurrency, pool=pool, grace_s=grace_s,
                            lock_ms=lock_ms, stalled_interval_ms=stalled_interval_ms,
                            max_stalled=max_stalled, max_jobs_per_child=max_jobs_per_child,
                            max_memory_mb=max_memory_mb)
        runner.run_forever()
    except BrokerError as exc:
        raise Unreachable(str(exc)) from exc
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    except TaskflowError as exc:
        raise CliError(str(exc)) from exc


# -- looking ----------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def queues(ctx: Context, as_json: bool) -> None:
    """List queues with their jobs per state."""

    async def read() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in await discover_queues(ctx.app):
            queue = ctx.app.queue(name)
            out[name] = {**await queue.acounts(), "paused": await queue.ais_paused()}
        return out

    found = run(read())
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no queues")
        return
    states = ["waiting", "prioritized", "delayed", "active", "completed", "failed"]
    click.echo(f"{'queue':<24}" + "".join(f"{s:>12}" for s in states))
    for name, counts in found.items():
        mark = " (paused)" if counts["paused"] else ""
        click.echo(f"{(name + mark):<24}" + "".join(f"{counts[s]:>12}" for s in states))


@main.command()
@click.argument("job_id")
@click.option("-q", "--queue", "queue_name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def job(ctx: Context, job_id: str, queue_name: str, as_json: bool) -> None:
    """Show one job: data, options, state, attempts, result or error, logs."""
    handle = ctx.app.queue(queue_name).job(job_id)

    async def read() -> tuple[JobInfo, list[str]]:
        return await handle.ainfo(), await handle.alogs()

    info, logs = run(read())
    if as_json:
        echo_json({**info.__dict__, "logs": logs})
        return
    click.echo(f"job {info.id} in {info.queue}: {click.style(info.state, bold=True)}")
    click.echo(f"  task:      {info.name}")
    click.echo(f"  data:      {orjson.dumps(info.data).decode()}")
    click.echo(f"  options:   {orjson.dumps(info.opts).decode()}")
    click.echo(f"  attempts:  {info.attempts_made} made, {info.attempts_started} started")
    if info.progress is not None:
        click.echo(f"  progress:  {orjson.dumps(info.progress).decode()}")
    if info.state == "completed":
        click.echo(f"  result:    {orjson.dumps(info.result).decode()}")
    if info.failed_reason:
        click.echo(f"  error:     {info.failed_reason}")
    if info.traceback:
        click.echo("  traceback:\n" + _indent(info.traceback))
    if logs:
        click.echo("  logs:\n" + _indent("\n".join(logs)))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


@main.command()
@click.argument("queue_name")
@click.argument("state", type=click.Choice(STATES))
@click.option("--start", default=0, show_default=True)
@click.option("--end", default=19, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs(ctx: Context, queue_name: str, state: str, start: int, end: int, as_json: bool) -> None:
    """List jobs of QUEUE_NAME in STATE, a page at a time."""
    infos = run(ctx.queue(queue_name).ajobs(state, start, end))
    if as_json:
        echo_json([i.__dict__ for i in infos])
        return
    for info in infos:
        click.echo(f"{info.id:>10}  {info.name:<40} {orjson.dumps(info.data).decode()[:60]}")


@main.command()
@click.argument("queue_names", nargs=-1)
@click.option("--since", default="$", show_default=True,
              help="Stream id to start after ('0' for all kept events).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", "limit", default=0, help="Stop after this many events (0 = never).")
@pass_ctx
def events(ctx: Context, queue_names: tuple[str, ...], since: str, as_json: bool,
           limit: int) -> None:
    """Follow queue events live (Ctrl-C to stop)."""
    if not re.fullmatch(r"\$|\d+(-\d+)?", since):
        raise click.BadParameter(f"use '$', '0' or a stream id like 1700000000000-0: {since!r}",
                                 param_hint="--since")
    known = run(discover_queues(ctx.app))
    names = list(queue_names) or known
    for name in queue_names:
        if name not in known:
            raise NotFound(f"no queue named {name!r} under prefix {ctx.app.prefix!r}")

    async def follow() -> None:
        seen = 0
        async for event in QueueEvents(ctx.app, names, since=since, block_ms=1000):
            if as_json:
                click.echo(orjson.dumps({"queue": event.queue, "id": event.id,
                                         **event.fields}).decode())
            else:
                extra = " ".join(f"{k}={v}" for k, v in event.fields.items()
                                 if k not in ("event", "jobId"))
                click.echo(f"{event.queue:<16} {event.event:<18} {event.job_id or '':<10} "
                           f"{extra[:100]}")
            seen += 1
            if limit and seen >= limit:
                return

    with contextlib.suppress(KeyboardInterrupt):
        run(follow())


@main.command()
@click.argument("queue_name")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between updates.")
@pass_ctx
def watch(ctx: Context, queue_name: str, interval: float) -> None:
    """Show a progress bar of QUEUE_NAME until no job waits or runs (delayed jobs, due
    later, don't count)."""
    queue = ctx.queue(queue_name)

    def pending(counts: dict[str, int]) -> int:
        return sum(counts[s] for s in ("waiting", "prioritized", "active"))

    first = run(queue.acounts())
    total = pending(first)
    done = 0
    with click.progressbar(length=max(total, 1), label=queue_name, show_pos=True) as bar:
        while True:
            left = pending(run(queue.acounts()))
            total = max(total, left + done)
            bar.length = max(total, 1)
            bar.update(max(0, total - left - done))
            done = total - left
            if left == 0:
                break
            time.sleep(interval)
    click.echo(f"{queue_name}: empty")


@main.command()
@pass_ctx
def metrics(ctx: Context) -> None:
    """Print job counts and finished totals in Prometheus text format."""

    async def text() -> str:
        return await aprometheus_text(ctx.app, await discover_queues(ctx.app))

    click.echo(run(text()), nl=False)


# -- steering ---------------------------------------------------------------------------


def _queue_action(name: str, help_text: str, act: Callable[[Queue], Coroutine[Any, Any, str]]
                  ) -> None:
    @main.command(name=name, help=help_text)
    @click.argument("queue_name")
    @pass_ctx
    def command(ctx: Context, queue_name: str) -> None:
        click.echo(run(act(ctx.queue(queue_name))))


async def _pause(queue: Queue) -> str:
    await queue.apause()
    return f"{queue.name}: paused"


async def _resume(queue: Queue) -> str:
    await queue.aresume()
    return f"{queue.name}: resumed"


_queue_action("pause", "Pause QUEUE_NAME for every worker.", _pause)
_queue_action("resume", "Resume QUEUE_NAME.", _resume)


@main.command()
@click.argument("queue_name")
@click.option("--delayed", is_flag=True, help="Remove delayed jobs too.")
@pass_ctx
def drain(ctx: Context, queue_name: str, delayed: bool) -> None:
    """Remove the jobs waiting in QUEUE_NAME."""
    removed = run(ctx.queue(queue_name).adrain(delayed))
    click.echo(f"{queue_name}: {removed} job(s) removed")


@main.command()
@click.argument("queue_name")
@click.option("--grace", "grace_s", default=0.0, show_default=True,
              help="Keep jobs that finished less than this many seconds ago.")
@click.option("--limit", default=None, type=int, help="Remove at most this many.")
@click.option("--state", default="completed", show_default=True,
              type=click.Choice(["completed", "failed"]))
@pass_ctx
def clean(ctx: Context, queue_name: str, grace_s: float, limit: int | None, state: str) -> None:
    """Remove finished jobs of QUEUE_NAME."""
    removed = run(ctx.queue(queue_name).aclean(grace_s, limit, state))
    click.echo(f"{queue_name}: {removed} {state} job(s) removed")


@main.command()
@click.argument("queue_name")
@click.option("--state", default="failed", show_default=True,
              type=click.Choice(["completed", "failed"]))
@click.option("--limit", default=None, type=int)
@click.option("--job", "job_id", default=None, help="Retry only this job.")
@pass_ctx
def retry(ctx: Context, queue_name: str, state: str, limit: int | None,
          job_id: str | None) -> None:
    """Send failed (or completed) jobs of QUEUE_NAME back to wait."""
    queue = ctx.queue(queue_name)
    if job_id is not None:
        if not run(queue.aretry_job(job_id, state)):
            raise NotFound(f"no {state} job {job_id} in {queue_name!r}")
        click.echo(f"{queue_name}: job {job_id} back in wait")
        return
    moved = run(queue.aretry(state, limit))
    click.echo(f"{queue_name}: {moved} job(s) back in wait")


@main.command()
@click.argument("queue_name")
@click.option("--force", is_flag=True, help="Even while jobs run.")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@pass_ctx
def obliterate(ctx: Context, queue_name: str, force: bool, yes: bool) -> None:
    """Remove QUEUE_NAME and every job in it."""
    queue = ctx.queue(queue_name)
    if not yes:
        click.confirm(f"Remove queue {queue_name!r} and all its jobs?", abort=True)
    run(queue.aobliterate(force))
    click.echo(f"{queue_name}: obliterated")


# -- job schedulers ---------------------------------------------------------------------


@main.group()
def schedules() -> None:
    """Job schedulers (made by task.schedule(...)): list, show, remove."""


def _schedulers(ctx: Context, queue_names: list[str]) -> Schedulers:
    return ctx.app.schedulers(queue_names or run(discover_queues(ctx.app)))


def _when(info: SchedulerInfo) -> str:
    if info.cron is not None:
        return f"cron {info.cron} {info.tz}"
    return f"every {info.every_s:g}s"


@schedules.command("list")
@click.argument("queue_names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def schedules_list(ctx: Context, queue_names: tuple[str, ...], as_json: bool) -> None:
    """List the schedulers of QUEUE_NAMES (default: all) with their next run, soonest first."""
    found = run(_schedulers(ctx, list(queue_names)).alist())
    if as_json:
        echo_json([info.__dict__ for info in found])
        return
    if not found:
        click.echo("no schedulers")
        return
    click.echo(f"{'next run':<26} {'id':<32} {'queue':<12} {'runs':>9}  schedule")
    for info in found:
        next_run = info.next_run.isoformat(timespec="seconds") if info.next_run else "-"
        runs = f"{info.iterations}/{info.limit}" if info.limit else str(info.iterations)
        click.echo(f"{next_run:<26} {info.id:<32} {info.queue:<12} {runs:>9}  {_when(info)}")


@schedules.command("show")
@click.argument("scheduler_id")
@click.option("-q", "--queue", "queue_name", default=None, help="Its queue (default: search).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def schedules_show(ctx: Context, scheduler_id: str, queue_name: str | None,
                   as_json: bool) -> None:
    """Show one scheduler: task, schedule, arguments, job options, runs, next run."""
    info = run(_schedulers(ctx, [queue_name] if queue_name else []).aget(scheduler_id))
    if info is None:
        raise NotFound(f"no scheduler {scheduler_id!r}")
    if as_json:
        echo_json(info.__dict__)
        return
    click.echo(f"scheduler {info.id} in {info.queue}")
    click.echo(f"  task:      {info.task}")
    click.echo(f"  schedule:  {_when(info)}")
    for label, moment in (("start", info.start), ("end", info.end)):
        if moment is not None:
            click.echo(f"  {label + ':':<10} {moment.isoformat()}")
    click.echo(f"  runs:      {info.iterations}" + (f" of {info.limit}" if info.limit else ""))
    next_run = info.next_run.isoformat() if info.next_run else "none (finished)"
    click.echo(f"  next run:  {next_run}")
    click.echo(f"  arguments: {orjson.dumps(info.data).decode()}")
    click.echo(f"  options:   {orjson.dumps(info.opts).decode()}")


@schedules.command("remove")
@click.argument("scheduler_id")
@click.option("-q", "--queue", "queue_name", default=None, help="Its queue (default: all).")
@pass_ctx
def schedules_remove(ctx: Context, scheduler_id: str, queue_name: str | None) -> None:
    """Remove a scheduler and the delayed job of its next run."""
    if not run(_schedulers(ctx, [queue_name] if queue_name else []).aremove(scheduler_id)):
        raise NotFound(f"no scheduler {scheduler_id!r}")
    click.echo(f"scheduler {scheduler_id}: removed")


# -- the embedded server ----------------------------------------------------------------


@main.group()
def server() -> None:
    """The embedded server (used when no broker URL is given)."""


@server.command("status")
def server_status() -> None:
    """Show whether the embedded server of this directory runs (exit 3 when it doesn't)."""
    status = embedded.server_status()
    for key, value in status.items():
        click.echo(f"{key}: {value}")
    if not status["running"]:
        raise SystemExit(EXIT_NOT_FOUND)


@server.command("start")
def server_start() -> None:
    """Start the embedded server (if it is not running) and print its URL."""
    try:
        click.echo(embedded.ensure_server())
    except TaskflowError as exc:
        raise Unreachable(str(exc)) from exc


@server.command("stop")
def server_stop() -> None:
    """Stop the embedded server of this directory."""
    click.echo("stopped" if embedded.stop_server() else "not running")
if __name__ == "__main__":
    main()
