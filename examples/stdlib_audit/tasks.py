"""The task of the stdlib audit: one job reads, parses and hashes one source file.

The app names no broker, so it uses ``$TASKFLOW_BROKER_URL`` when that is set
and otherwise the embedded server (started on first use under ``./.taskflow``).
The worker and the producer must run on the same machine: jobs carry file paths.
"""

from __future__ import annotations

import ast
import hashlib
from datetime import timedelta
from typing import Any

from taskflow import App

app = App("stdlib_audit")


# Finished jobs are kept for an hour whatever their number (the default keeps the
# last 1000), so the producer can read every result back from its job.
@app.task(name="stdlib_audit.audit_file", keep_completed=timedelta(hours=1))
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
