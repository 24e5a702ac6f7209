"""The ``taskflow`` command: run workers, look at queues and the embedded server."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from taskflow import _portal
from taskflow.app import App
from taskflow.backends import embedded
from taskflow.errors import TaskflowError

logger = logging.getLogger(__name__)


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


@click.group()
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """taskflow: a job queue on Redis."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


@main.command()
@click.argument("target")
@click.option("-c", "--concurrency", default=10, show_default=True, help="Jobs run at once.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: the app's).")
@click.option("--pool", default="threads", show_default=True,
              type=click.Choice(["threads", "async"]), help="Where plain functions run.")
@click.option("--grace", "grace_s", default=30.0, show_default=True,
              help="Seconds running jobs get to finish on SIGTERM/SIGINT.")
@click.option("--lock-ms", default=30_000, show_default=True, help="Job lock duration.")
@click.option("--stalled-interval-ms", default=30_000, show_default=True,
              help="How often the stalled check runs.")
def worker(target: str, concurrency: int, queues: str | None, pool: str, grace_s: float,
           lock_ms: int, stalled_interval_ms: int) -> None:
    """Run a worker for the app at TARGET (module:attribute)."""
    app = load_app(target)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        runner = app.worker(names, concurrency=concurrency, pool=pool, grace_s=grace_s,
                            lock_ms=lock_ms, stalled_interval_ms=stalled_interval_ms)
        runner.run_forever()
    except TaskflowError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("target")
def counts(target: str) -> None:
    """Print the number of jobs per state in each queue of the app at TARGET."""
    app = load_app(target)

    async def read() -> dict[str, dict[str, int]]:
        broker = app.broker()
        return {q: await broker.counts(q) for q in app.queues}

    try:
        found: dict[str, Any] = _portal.run(read())
    except TaskflowError as exc:
        raise click.ClickException(str(exc)) from exc
    for queue, per_state in found.items():
        line = "  ".join(f"{state}={n}" for state, n in per_state.items())
        click.echo(f"{queue}: {line}")


@main.group()
def server() -> None:
    """The embedded server (used when no broker URL is given)."""


@server.command("status")
def server_status() -> None:
    """Show whether the embedded server of this directory runs."""
    for key, value in embedded.server_status().items():
        click.echo(f"{key}: {value}")


@server.command("start")
def server_start() -> None:
    """Start the embedded server (if it is not running) and print its URL."""
    try:
        click.echo(embedded.ensure_server())
    except TaskflowError as exc:
        raise click.ClickException(str(exc)) from exc


@server.command("stop")
def server_stop() -> None:
    """Stop the embedded server of this directory."""
    click.echo("stopped" if embedded.stop_server() else "not running")
