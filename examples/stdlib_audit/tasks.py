"""The tasks of the stdlib audit, a flow: one child job per source file reads, parses
and hashes it (CPU-bound: it runs in the worker's process pool); the parent job runs
once every child is done and builds the report from their results.

The app names no broker, so it uses ``$TASKFLOW_BROKER_URL`` when that is set
and otherwise the embedded server (started on first use under ``./.taskflow``).
The worker and the producer must run on the same machine: jobs carry file paths.
"""

from __future__ import annotations

import ast
import hashlib
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from taskflow import App, current_job

app = App("stdlib_audit")


# A child's result goes to its parent when it completes: the child itself needn't stay.
@app.task(name="stdlib_audit.audit_file", pool="processes", keep_completed=False)
def audit_file(path: str) -> dict[str, Any]:
    """Audit one Python source file.

    Returns its size, line count and sha256, and (when it parses) the number of
    functions (methods and async included) and classes, and the sorted top-level
    names of the modules it imports absolutely (``import a.b`` and
    ``from a.b import c`` both count as ``a``). A file that does not parse gets
    an ``error`` entry instead of the counts: the job still completes.
    """
    entry: dict[str, Any] = {"path": path}
    try:
        data = open(path, "rb").read()  # noqa: SIM115 - small files, read at once
    except OSError as exc:
        entry["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return entry
    entry["bytes"] = len(data)
    entry["lines"] = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        tree = ast.parse(data, filename=path)  # bytes: the coding cookie is honoured
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        # SyntaxError covers bad encodings too; ValueError is a NUL byte on 3.11.
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        entry["error"] = f"{type(exc).__name__}: {message}{where}"
        return entry
    functions = classes = 0
    imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions += 1
        elif isinstance(node, ast.ClassDef):
            classes += 1
        elif isinstance(node, ast.Import):
            imports.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imports.add(node.module.partition(".")[0])
    entry.update(functions=functions, classes=classes, imports=sorted(imports))
    return entry


@app.task(name="stdlib_audit.build_report")
def build_report(root: str, top: int = 10) -> dict[str, Any]:
    """The parent: the report, from every child's result (in the order they were given)."""
    entries = [e for e in current_job().results() if e is not None]
    return {"files": len(entries), "text": report(Path(root), entries, top)}


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
