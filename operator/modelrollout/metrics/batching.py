"""Rollouts that ask the same shared query while it is in flight are answered by the
next one, together: one grouped query (metrics/grouping.py) instead of one each.

Nobody waits for a batch to fill. The first ask goes out at once; asks that arrive
while it is in flight go out together as soon as it lands. Every answer is read
after its ask was made, so no rollout judges data older than its own pass.

A grouped query that Prometheus refuses or cannot finish (HTTP 400 or 422: too many
samples, an execution error caused by one rollout's series) or whose answer is too
large is no verdict on any one rollout: each is told to ask its own query (None).
An outage (unreachable, 5xx, timeout) is everyone's: their own would fail too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from modelrollout import telemetry
from modelrollout.core.types import QueryFailed, QueryRejected, Reading
from modelrollout.metrics.grouping import Plan

# Asks answered by one grouped query at most: keeps its regexes and answer small.
MAX_BATCH = 200

Share = list[dict[str, Any]]
Answer = Share | Reading | None
Run = Callable[[str], Awaitable[Any]]
Waiting = list[tuple[tuple[str, ...], "asyncio.Future[Answer]"]]


@dataclass
class _Line:
    plan: Plan
    waiting: Waiting = field(default_factory=list)
    flying: asyncio.Task[None] | None = None


class Batches:
    """The shared queries of one metrics source. `run` asks the source a query and
    returns Prometheus' `data.result`, or the failure as a Reading."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._lines: dict[Plan, _Line] = {}

    async def ask(self, plan: Plan, group: tuple[str, ...]) -> Answer:
        """This rollout's share of the grouped answer, as its own query's `data.result`:
        the series whose grouping labels are `group` (in `plan.labels` order); or
        None when it must ask its own query."""
        line = self._lines.setdefault(plan, _Line(plan))
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        line.waiting.append((group, answer))
        if line.flying is None:
            line.flying = asyncio.create_task(self._fly(line))
        return await answer

    async def _fly(self, line: _Line) -> None:
        batch: Waiting = []
        try:
            while line.waiting:
                batch, line.waiting = line.waiting[:MAX_BATCH], line.waiting[MAX_BATCH:]
                await self._answer(line.plan, batch)
        except BaseException as error:  # cancelled at shutdown, or a bug: nobody hangs
            for _, answer in batch + line.waiting:
                if not answer.done():
                    answer.set_exception(error)
                    answer.exception()  # retrieved, for askers already gone
            line.waiting = []
            raise
        finally:
            line.flying = None
            if not line.waiting:
                self._lines.pop(line.plan, None)

    async def _answer(self, plan: Plan, batch: Waiting) -> None:
        result = await self._run(plan.query({group for group, _ in batch}))
        shares: dict[tuple[str, ...], Share] | Reading | None = (
            result if isinstance(result, QueryFailed | QueryRejected) else split(plan, result)
        )
        failed = isinstance(shares, QueryFailed | QueryRejected)
        if failed and not _nobodys(shares):  # type: ignore[arg-type]
            shares = None
        if shares is not None:
            telemetry.GROUPED_ANSWERS.inc(len(batch))
        for group, answer in batch:
            if not answer.done():
                answer.set_result(shares.get(group, []) if isinstance(shares, dict) else shares)


def _nobodys(failure: QueryFailed | QueryRejected) -> bool:
    """An outage, which a rollout's own query would meet as well."""
    if isinstance(failure, QueryRejected):
        return False
    return not (failure.message.startswith("HTTP 422") or "larger than" in failure.message)


def split(plan: Plan, result: Any) -> dict[tuple[str, ...], Share] | Reading:
    """Each group's series, labelled as its own query would have labelled them."""
    shares: dict[tuple[str, ...], Share] = {}
    try:
        for item in result:
            metric = dict(item["metric"])
            group = plan.group_of(metric)
            if group is not None:
                shares.setdefault(group, []).append({**item, "metric": plan.share(metric)})
    except (TypeError, KeyError, ValueError) as error:
        return QueryRejected(f"the query must return an instant vector: {error}")
    return shares
