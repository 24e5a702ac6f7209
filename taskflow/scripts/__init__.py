"""The Lua scripts of the engine: one file per operation, each prefixed with ``_lib.lua``."""

from __future__ import annotations

from functools import cache
from importlib import resources

NAMES = (
    "add", "finish_fetch", "extend_locks", "stalled", "progress", "log", "pause",
    "remove_jobs", "remove_job", "retry_jobs", "reschedule", "obliterate_meta", "add_flow",
    "flow_stage", "flow_commit", "flow_discard",
    "schedule_upsert", "schedule_remove",
)


@cache
def source(name: str) -> str:
    """The full text of script ``name``: the shared library, then the script."""
    folder = resources.files(__package__)
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    return f"{lib}\n{body}"
