"""The ``taskflow`` command, through click's runner and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from taskflow import App
from taskflow.cli import main


@pytest.fixture
def cli(server_url: str, prefix: str):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--url", server_url, "--prefix", prefix, *args],
                             input=input, catch_exceptions=False)

    return invoke


def _fill(app: App) -> tuple[list[str], str]:
    @app.task(attempts=1)
    def work(i: int) -> int:
        if i < 0:
            raise ValueError("negative")
        return i

    jobs = app.add_bulk([work.s(i) for i in range(3)])
    return [j.id for j in jobs], work.name


def test_queues_lists_counts(app: App, cli) -> None:  # type: ignore[no-untyped-def]
    _fill(app)
    result = cli("queues")
    assert result.exit_code == 0
    assert "default" in result.output and "3" in result.output
    as_json = json.loads(cli("queues", "--json").output)
    assert as_json["default"]["waiting"] == 3
    assert as_json["default"]["paused"] is False


def test_job_show_and_not_found(app: App, cli) -> None:  # type: ignore[no-untyped-def]
    ids, name = _fill(app)
    shown = cli("job", ids[0])
    assert shown.exit_code == 0
    assert f"job {ids[0]} in default" in shown.output and name in shown.output
    data = json.loads(cli("job", ids[1], "--json").output)
    assert data["data"] == {"i": 1} and data["state"] == "waiting"
    missing = cli("job", "nope")
    assert missing.exit_code == 3
    assert "no job nope" in missing.output


def test_pause_resume_drain_clean_retry_obliterate(app: App, cli) -> None:  # type: ignore
    _fill(app)
    assert cli("pause", "default").exit_code == 0
    assert app.queue().is_paused()
    assert cli("resume", "default").exit_code == 0
    assert not app.queue().is_paused()
    drained = cli("drain", "default")
    assert "3 job(s) removed" in drained.output
    assert cli("clean", "default", "--grace", "0").exit_code == 0
    assert "0 job(s) back in wait" in cli("retry", "default").output
    refused = cli("obliterate", "default", input="n\n")
    assert refused.exit_code == 1  # aborted at the prompt
    assert cli("obliterate", "default", "--yes").exit_code == 0
    assert cli("pause", "default").exit_code == 3  # gone now


def test_unknown_queue_is_exit_3(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("drain", "nowhere")
    assert result.exit_code == 3
    assert "no queue named 'nowhere'" in result.output


def test_metrics_and_jobs_listing(app: App, cli) -> None:  # type: ignore[no-untyped-def]
    ids, _ = _fill(app)
    text = cli("metrics").output
    assert 'taskflow_jobs{queue="default",state="waiting"} 3' in text
    listed = cli("jobs", "default", "waiting")
    assert [line.split()[0] for line in listed.output.splitlines()] == ids


def test_events_follow_with_count(app: App, cli) -> None:  # type: ignore[no-untyped-def]
    _fill(app)
    result = cli("events", "default", "--since", "0", "--count", "2", "--json")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["event"] for line in lines] == ["added", "waiting"]


def test_bad_and_unreachable_urls_give_messages_not_tracebacks() -> None:
    env = {**os.environ, "TASKFLOW_BROKER_URL": ""}
    bad = subprocess.run([sys.executable, "-m", "taskflow.cli", "--url", "http://x", "queues"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert "redis://" in bad.stderr and "Traceback" not in bad.stderr
    down = subprocess.run(
        [sys.executable, "-m", "taskflow.cli", "--url", "redis://127.0.0.1:1/0", "queues"],
        capture_output=True, text=True, env=env, timeout=60)
    assert down.returncode == 4
    assert "unreachable" in down.stderr and "Traceback" not in down.stderr


def test_watch_shows_progress_until_empty(app: App, cli) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import threading

    _fill(app)
    worker = app.worker(concurrency=2)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()))
    thread.start()
    try:
        result = cli("watch", "default", "--interval", "0.1")
    finally:
        worker.stop()
        thread.join(30)
    assert result.exit_code == 0
    assert "default: empty" in result.output
