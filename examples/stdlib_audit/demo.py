"""The stdlib audit end to end: a worker process, the producer, a graceful stop.

    python -m examples.stdlib_audit.demo [--skip-tests] [--limit N] [-c 8] [--keep-server]

Run from the repository root. It starts ``taskflow worker
examples.stdlib_audit.tasks:app -c 8`` as a subprocess, runs the producer
(``python -m examples.stdlib_audit.run``), then stops the worker with SIGTERM and
checks that it exits 0. Without ``$TASKFLOW_BROKER_URL`` both use the embedded
server of ``./.taskflow``; if the demo started that server, it stops it at the
end (``--keep-server`` leaves it running). Exits 0 when everything went well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from taskflow.backends import embedded

REPO = Path(__file__).resolve().parents[2]
APP = "examples.stdlib_audit.tasks:app"
WORKER_GRACE_S = 30.0


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def taskflow_command() -> list[str]:
    """The ``taskflow`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "taskflow"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("taskflow")
    if found:
        return [found]
    raise SystemExit("the `taskflow` command is not installed here: pip install -e .")


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM (finish running jobs, then exit), then SIGKILL if it overstays."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=WORKER_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            say(f"worker {worker.pid} ignored SIGTERM; killing it")
            worker.kill()
            worker.wait()
    return worker.returncode


def log_tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the stdlib audit end to end.")
    parser.add_argument("--skip-tests", action="store_true", help="leave out test directories")
    parser.add_argument("--limit", type=int, default=0, help="audit only the first N files")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="worker concurrency")
    parser.add_argument("--timeout", type=float, default=600.0, help="producer's wait limit, s")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the embedded server running if the demo started it")
    args = parser.parse_args(argv)

    os.chdir(REPO)  # the embedded server's home is ./.taskflow: one for all three processes
    started_server = False
    if os.environ.get("TASKFLOW_BROKER_URL"):
        say(f"broker: $TASKFLOW_BROKER_URL = {os.environ['TASKFLOW_BROKER_URL']}")
    else:
        was_running = bool(embedded.server_status()["running"])
        url = embedded.ensure_server()
        started_server = not was_running
        say(f"embedded server {'already running' if was_running else 'started'}: {url}")

    log_dir = Path(tempfile.mkdtemp(prefix="stdlib-audit-demo-"))
    log_path = log_dir / "worker.log"
    t0 = time.perf_counter()
    failures: list[str] = []
    with open(log_path, "wb") as log:
        worker_cmd = [*taskflow_command(), "worker", APP, "-c", str(args.concurrency)]
        say("$ taskflow " + " ".join(worker_cmd[1:]))
        worker = subprocess.Popen(worker_cmd, cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT)
        say(f"worker pid {worker.pid}, log {log_path}")
        try:
            producer_cmd = [sys.executable, "-m", "examples.stdlib_audit.run",
                            "--timeout", str(args.timeout)]
            if args.skip_tests:
                producer_cmd.append("--skip-tests")
            if args.limit:
                producer_cmd += ["--limit", str(args.limit)]
            say("$ python " + " ".join(producer_cmd[1:]))
            producer = subprocess.Popen(producer_cmd, cwd=REPO, stdin=subprocess.DEVNULL)
            while producer.poll() is None:
                if worker.poll() is not None:
                    failures.append(f"the worker exited early with status {worker.returncode}")
                    producer.terminate()
                    producer.wait()
                    break
                time.sleep(0.1)
            if producer.returncode != 0 and not failures:
                failures.append(f"the producer exited with status {producer.returncode}")
        finally:
            t_stop = time.perf_counter()
            code = stop_worker(worker)
            say(f"worker stopped by SIGTERM in {time.perf_counter() - t_stop:.2f} s, "
                f"exit status {code}")
    if code != 0 and not failures:
        failures.append(f"the worker exited with status {code} after SIGTERM (expected 0)")

    if started_server and not args.keep_server:
        embedded.stop_server()
        say("embedded server stopped (the demo had started it)")
    elapsed = time.perf_counter() - t0
    if failures:
        for failure in failures:
            say(f"FAILED: {failure}")
        say(f"last lines of the worker log ({log_path}):\n{log_tail(log_path, 20)}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    say(f"OK: end to end in {elapsed:.1f} s (worker start to worker exit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
