"""The producer of the stdlib audit: queue one job per source file, gather, report.

    python -m examples.stdlib_audit.run [--skip-tests] [--limit N] [--timeout S]

Needs a worker of the same app on the same broker (and machine)::

    taskflow worker examples.stdlib_audit.tasks:app -c 8
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskflow import JobFailedError, ResultTimeoutError

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.stdlib_audit.tasks import app, audit_file

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


def collect(jobs: Sequence[Any], paths: Sequence[str], timeout_s: float) -> list[dict[str, Any]]:
    """Wait for every job in order; a failed job becomes an error entry."""
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + PROGRESS_EVERY_S
    entries: list[dict[str, Any]] = []
    for done, (job, path) in enumerate(zip(jobs, paths, strict=True)):
        left = max(0.001, deadline - time.monotonic())
        try:
            entries.append(job.result(timeout=left))
        except JobFailedError as exc:
            entries.append({"path": path, "error": f"job {job.id} failed: {exc.reason}"})
        if time.monotonic() >= next_note:
            print(f"  ... {done + 1}/{len(jobs)} results", file=sys.stderr, flush=True)
            next_note = time.monotonic() + PROGRESS_EVERY_S
    return entries


def report(root: Path, entries: list[dict[str, Any]], top: int) -> str:
    """The audit report as text."""
    ok = [e for e in entries if "error" not in e]
    bad = [e for e in entries if "error" in e]
    imports: Counter[str] = Counter()
    for e in ok:
        imports.update(e["imports"])
    fingerprint = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e["path"]):
        fingerprint.update(f"{e['path']}\0{e.get('sha256', '-')}\n".encode())

    def rel(path: str) -> str:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path

    lines = [
        f"Audit of {root} (Python {platform.python_version()})",
        f"  files              {len(entries):>10,}  ({len(ok):,} parsed, {len(bad):,} with errors)",
        f"  lines              {sum(e.get('lines', 0) for e in entries):>10,}",
        f"  bytes              {sum(e.get('bytes', 0) for e in entries):>10,}",
        f"  functions          {sum(e['functions'] for e in ok):>10,}",
        f"  classes            {sum(e['classes'] for e in ok):>10,}",
        f"  modules imported   {len(imports):>10,}  (distinct top-level names)",
        f"  fingerprint        {fingerprint.hexdigest()[:16]}  (sha256 over path + file sha256)",
        "",
        f"Top {top} files by lines:",
    ]
    biggest = sorted(ok, key=lambda e: (-e["lines"], e["path"]))[:top]
    lines += [f"  {e['lines']:>7,}  {rel(e['path'])}" for e in biggest]
    lines += ["", f"Top {top} imported modules (files importing them):"]
    lines += [f"  {n:>7,}  {name}" for name, n in
              sorted(imports.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    if bad:
        lines += ["", f"Files with errors ({len(bad)}):"]
        lines += [f"  {rel(e['path'])}: {e['error']}" for e in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20} more")
    return "\n".join(lines)


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
    jobs = app.add_bulk([audit_file.s(path) for path in paths])
    t1 = time.perf_counter()
    print(f"queued {len(jobs):,} jobs in {t1 - t0:.3f} s; waiting for results "
          "(a worker must run: taskflow worker examples.stdlib_audit.tasks:app)",
          file=sys.stderr, flush=True)
    try:
        entries = collect(jobs, paths, args.timeout)
    except ResultTimeoutError as exc:
        print(f"gave up after {args.timeout:.0f} s: {exc}; is a worker running?", file=sys.stderr)
        return 1
    t2 = time.perf_counter()

    print(report(root, entries, args.top))
    print(f"\nElapsed: {t2 - t0:.2f} s for {len(jobs):,} jobs ({len(jobs) / (t2 - t0):,.0f} jobs/s;"
          f" enqueue {t1 - t0:.3f} s, results {t2 - t1:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
