"""The producer of the stdlib audit: add the flow (one child job per source file under a
report job), wait for the report, print it.

    python -m examples.stdlib_audit.run [--skip-tests] [--limit N] [--timeout S]

Needs a worker of the same app on the same broker (and machine)::

    taskflow worker examples.stdlib_audit.tasks:app -c 8
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskflow import JobFailedError, ResultTimeoutError

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.stdlib_audit.tasks import app, audit_file, build_report

TEST_DIRS = frozenset({"test", "tests", "idle_test"})
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
PROGRESS_EVERY_S = 2.0


def stdlib_files(skip_tests: bool = False) -> tuple[Path, list[str]]:
    """The standard library's root and its .py files (sorted), without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in root.rglob("*.py"):
        parts = set(path.relative_to(root).parts[:-1])
        if parts & SKIP_DIRS or (skip_tests and parts & TEST_DIRS):
            continue
        if path.is_file():
            found.append(str(path))
    return root, sorted(found)


def wait_for_report(root_job: Any, children: int, timeout_s: float) -> dict[str, Any]:
    """The report job's result, with a progress line now and then."""
    deadline = time.monotonic() + timeout_s
    queue = app.queue()
    while True:
        left = deadline - time.monotonic()
        try:
            found: dict[str, Any] = root_job.result(timeout=max(0.001, min(PROGRESS_EVERY_S,
                                                                              left)))
            return found
        except ResultTimeoutError:
            if left <= PROGRESS_EVERY_S:
                raise
        counts = queue.counts()
        pending = counts["waiting"] + counts["active"]
        print(f"  ... {children - pending:,}/{children} files audited", file=sys.stderr,
              flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Queue one audit job per stdlib source file, wait for all, print a report.")
    parser.add_argument("--skip-tests", action="store_true",
                        help="leave out test directories (test, tests, idle_test)")
    parser.add_argument("--limit", type=int, default=0, help="audit only the first N files")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for all results (default 600)")
    parser.add_argument("--top", type=int, default=10, help="rows in the top lists (default 10)")
    args = parser.parse_args(argv)

    root, paths = stdlib_files(args.skip_tests)
    if args.limit > 0:
        paths = paths[:args.limit]
    if not paths:
        print(f"no .py files under {root}", file=sys.stderr)
        return 1
    print(f"broker: {app.url}", file=sys.stderr)

    t0 = time.perf_counter()
    flow = build_report.s(str(root), args.top, children=[audit_file.s(p) for p in paths])
    root_job = flow.delay()
    t1 = time.perf_counter()
    print(f"added a flow of {len(paths):,} audit jobs under report job {root_job.id} in "
          f"{t1 - t0:.3f} s; waiting for the report "
          "(a worker must run: taskflow worker examples.stdlib_audit.tasks:app)",
          file=sys.stderr, flush=True)
    try:
        done = wait_for_report(root_job, len(paths), args.timeout)
    except ResultTimeoutError as exc:
        print(f"gave up after {args.timeout:.0f} s: {exc}; is a worker running?", file=sys.stderr)
        return 1
    except JobFailedError as exc:
        print(f"the report job failed: {exc.reason}", file=sys.stderr)
        return 1
    t2 = time.perf_counter()

    print(done["text"])
    print(f"\nElapsed: {t2 - t0:.2f} s for {len(paths):,} files ({len(paths) / (t2 - t0):,.0f} "
          f"files/s; flow added in {t1 - t0:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
