"""Flows: trees of jobs where a parent runs after all its children, and reads their results.

Build a tree with signatures::

    report.s(month="2026-11", children=[crunch.s(part) for part in parts]).delay()

Children may be parents themselves, to any depth, and may live in other queues than
their parent. The whole tree is added in one script call: all of it or none.

Celery's shapes on top: :func:`chain` (each step gets the previous step's result as
its first argument), :func:`group` (run together, gather the results) and
:func:`chord` (a group, then a callback that gets the group's results in order).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskflow import _json, _portal
from taskflow.backends.base import NewJob
from taskflow.errors import ConfigurationError
from taskflow.job import Job
from taskflow.options import POLICY_FLAGS
from taskflow.task import Signature

if TYPE_CHECKING:
    from taskflow.backends.redis import RedisBroker

__all__ = ["Group", "GroupResult", "aadd_flow", "aadd_flows", "add_flow", "add_flows", "chain",
           "chord", "group"]

MAX_DEPTH = 64
# Flows up to this size are added in one script call; larger ones are staged in chunks
# of this size and made visible by one short commit (see scripts/flow_stage.lua).
ONE_CALL_NODES = 200


@dataclass(frozen=True, slots=True)
class FlowNode:
    """One node of a flattened tree: parents come before their children."""

    signature: Signature[Any]
    queue: str
    parent_index: int  # 1-based position of the parent in the flat list, 0 for the root
    depth: int


def flatten(root: Signature[Any]) -> list[FlowNode]:
    """The tree in pre-order, checked: signatures only, no node twice (so no cycle), no
    custom id twice, known queues, bounded depth. Raises ConfigurationError before
    anything is written."""
    app = root.task.app
    known = set(app.queues)
    nodes: list[FlowNode] = []
    seen: set[int] = set()
    custom_ids: set[tuple[str, str]] = set()
    stack: list[tuple[Any, int, int]] = [(root, 0, 0)]
    while stack:
        sig, parent_index, depth = stack.pop()
        _check_node(sig, seen, known, depth)
        queue = sig.queue or sig.task.queue
        job_id = sig.options.job_id
        if job_id is not None:
            if (queue, job_id) in custom_ids:
                raise ConfigurationError(f"job id {job_id!r} appears twice in the flow")
            custom_ids.add((queue, job_id))
        nodes.append(FlowNode(sig, queue, parent_index, depth))
        index = len(nodes)
        for child in reversed(sig.children):
            stack.append((child, index, depth + 1))
    return nodes


def _check_node(sig: object, seen: set[int], known: set[str], depth: int) -> None:
    if not isinstance(sig, Signature):
        raise ConfigurationError(f"a flow node must be a task signature (task.s(...)): {sig!r}")
    if id(sig) in seen:
        raise ConfigurationError(
            f"signature {sig.task.name} appears twice in the flow (a cycle or a shared node)")
    seen.add(id(sig))
    queue = sig.queue or sig.task.queue
    if queue not in known:
        raise ConfigurationError(
            f"flow node {sig.task.name} is on queue {queue!r}, which no task of the app uses")
    if depth > MAX_DEPTH:
        raise ConfigurationError(f"flow deeper than {MAX_DEPTH} levels")


def _new_job(node: FlowNode, has_parent: bool = False) -> NewJob:
    extra: dict[str, Any] = {}
    if node.parent_index or has_parent:
        extra[POLICY_FLAGS[node.signature.options.on_failure]] = True
    if node.signature.feed:
        extra["tff"] = node.signature.feed
    return node.signature.to_new_job(extra)


async def aadd_flow(root: Signature[Any], parent_key: str = "") -> Job[Any]:
    """Add the tree under ``root`` at once; returns the root's job, whose ``children``
    (and theirs, down the tree) are the jobs of the other nodes. With ``parent_key`` the
    root becomes a child of that existing job (a running step job adding children)."""
    nodes = flatten(root)
    new_jobs = [_new_job(node, bool(parent_key)) for node in nodes]  # encode all first
    app = root.task.app
    broker = app.broker()
    if len(nodes) <= ONE_CALL_NODES:
        ids = await broker.add_flow([(node.queue, job, node.parent_index)
                                     for node, job in zip(nodes, new_jobs, strict=True)],
                                    parent_key)
    elif parent_key:
        raise ConfigurationError(
            f"a child tree of a running job holds at most {ONE_CALL_NODES} nodes")
    else:
        ids = await _add_staged(broker, nodes, new_jobs)
    handles: list[Job[Any]] = [Job(app, node.queue, job_id, node.signature.task.name)
               for node, job_id in zip(nodes, ids, strict=True)]
    for node, handle in zip(nodes, handles, strict=True):
        if node.parent_index:
            handles[node.parent_index - 1].children.append(handle)
    return handles[0]


async def _assign_ids(broker: RedisBroker, nodes: list[FlowNode], jobs: list[NewJob]
                      ) -> list[str]:
    wanted: dict[str, int] = {}
    for node, job in zip(nodes, jobs, strict=True):
        if not job.job_id:
            wanted[node.queue] = wanted.get(node.queue, 0) + 1
    next_id = {queue: await broker.reserve_ids(queue, count) for queue, count in wanted.items()}
    ids = []
    for node, job in zip(nodes, jobs, strict=True):
        if job.job_id:
            ids.append(job.job_id)
        else:
            ids.append(str(next_id[node.queue]))
            next_id[node.queue] += 1
    return ids


async def _add_staged(broker: RedisBroker, nodes: list[FlowNode], jobs: list[NewJob]
                      ) -> list[str]:
    """Stage a large flow in chunks, then commit it in one short call."""
    ids = await _assign_ids(broker, nodes, jobs)
    keys = [f"{broker.keys(n.queue).base}{job_id}" for n, job_id in zip(nodes, ids, strict=True)]
    children: dict[int, list[str]] = {}
    for index, node in enumerate(nodes):
        if node.parent_index:
            children.setdefault(node.parent_index - 1, []).append(keys[index])
    rows = [_staged_row(broker, nodes, jobs, ids, keys, children, i) for i in range(len(nodes))]
    root_queue, flow_id = nodes[0].queue, uuid.uuid4().hex
    for start in range(0, len(rows), ONE_CALL_NODES):
        taken = await broker.stage_flow(root_queue, flow_id, rows[start:start + ONE_CALL_NODES])
        if taken:
            await broker.discard_flow(root_queue, flow_id)
            queue, job_id = nodes[start + taken - 1].queue, ids[start + taken - 1]
            raise ConfigurationError(
                f"job id {job_id!r} exists already in queue {queue!r}; nothing was added")
    if not await broker.commit_flow(root_queue, flow_id, _commit_groups(broker, nodes, jobs,
                                                                         ids, children)):
        raise ConfigurationError("the staged flow was discarded before it was committed")
    return ids


def _staged_row(broker: RedisBroker, nodes: list[FlowNode], jobs: list[NewJob], ids: list[str],
                keys: list[str], children: dict[int, list[str]], i: int) -> list[Any]:
    node, job = nodes[i], jobs[i]
    parent_key = parent = ""
    if node.parent_index:
        parent_node = nodes[node.parent_index - 1]
        parent_key = keys[node.parent_index - 1]
        # BullMQ's workers read the failure policy flag here, not in the opts
        parent = _json.dumps({"id": ids[node.parent_index - 1],
                              "queueKey": broker.keys(parent_node.queue).base[:-1],
                              POLICY_FLAGS[node.signature.options.on_failure]: True})
    ordered = _json.dumps(children[i]) if i in children else ""
    return [broker.keys(node.queue).base, ids[i], job.name, job.data, job.opts, job.delay_ms,
            job.priority, parent_key, parent, ordered, "1" if job.job_id else "0"]


def _commit_groups(broker: RedisBroker, nodes: list[FlowNode], jobs: list[NewJob],
                   ids: list[str], children: dict[int, list[str]]
                   ) -> list[tuple[str, str, list[str]]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for i, (node, job) in enumerate(zip(nodes, jobs, strict=True)):
        if i in children:
            kind = "parent"
        elif job.delay_ms or job.priority or job.lifo:
            kind = "ready"
        else:
            kind = "wait"
        groups.setdefault((broker.keys(node.queue).base, kind), []).append(ids[i])
    return [(base, kind, found) for (base, kind), found in groups.items()]


async def aadd_flows(roots: Iterable[Signature[Any]]) -> list[Job[Any]]:
    """Add several trees; each is atomic on its own."""
    return [await aadd_flow(root) for root in roots]


def add_flow(root: Signature[Any]) -> Job[Any]:
    """Like :func:`aadd_flow`, from sync code."""
    return _portal.run(aadd_flow(root))


def add_flows(roots: Iterable[Signature[Any]]) -> list[Job[Any]]:
    """Like :func:`aadd_flows`, from sync code."""
    return _portal.run(aadd_flows(list(roots)))


# -- Celery's shapes -------------------------------------------------------------------


def chain(*steps: Signature[Any]) -> Signature[Any]:
    """Run steps one after another; each step after the first gets the previous step's
    result as its first argument. Returns the last step, ready to ``delay()``."""
    if not steps:
        raise ConfigurationError("chain() needs at least one step")
    for step in steps:
        if not isinstance(step, Signature):
            raise ConfigurationError(f"a chain step must be a task signature: {step!r}")
    node = steps[0]
    for step in steps[1:]:
        node = step.fed("previous").with_children([node])
    return node


def chord(header: Sequence[Signature[Any]] | Group, callback: Signature[Any]) -> Signature[Any]:
    """Run ``header`` together, then ``callback`` with the list of their results (in the
    order given) as its first argument."""
    members = header.signatures if isinstance(header, Group) else tuple(header)
    if not members:
        raise ConfigurationError("chord() needs at least one signature in its header")
    return callback.fed("results").with_children(members)


@dataclass(frozen=True)
class Group:
    """Signatures run together; ``delay()`` returns a :class:`GroupResult`."""

    signatures: tuple[Signature[Any], ...]

    def delay(self) -> GroupResult:
        return _portal.run(self.adelay())

    async def adelay(self) -> GroupResult:
        if not self.signatures:
            return GroupResult([])
        app = self.signatures[0].task.app
        plain = [s for s in self.signatures if not s.children]
        jobs = iter(await app.aadd_bulk(plain))
        found = [await aadd_flow(s) if s.children else next(jobs) for s in self.signatures]
        return GroupResult(found)


def group(*signatures: Signature[Any] | Iterable[Signature[Any]]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(i) for i in ...)``."""
    flat: list[Signature[Any]] = []
    for item in signatures:
        flat.extend([item] if isinstance(item, Signature) else item)
    return Group(tuple(flat))


class GroupResult:
    """The jobs of a group; ``results()`` waits for all, in order."""

    def __init__(self, jobs: list[Job[Any]]) -> None:
        self.jobs = jobs

    async def aresults(self, timeout: float | None = None) -> list[Any]:
        return [await job.aresult(timeout) for job in self.jobs]

    def results(self, timeout: float | None = None) -> list[Any]:
        return _portal.run(self.aresults(timeout))
