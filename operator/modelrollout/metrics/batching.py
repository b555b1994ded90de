"""Rollouts that ask the same shared query while it is in flight are answered by the
next one, together: one grouped query (metrics/grouping.py) instead of one each.

Nobody waits for a batch to fill. The first ask goes out at once; asks that arrive
while it is in flight go out together as soon as it lands. Every answer is read
after its ask was made, so no rollout judges data older than its own pass.
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
Run = Callable[[str], Awaitable[Any]]


@dataclass
class _Line:
    plan: Plan
    waiting: list[tuple[tuple[str, ...], asyncio.Future[Share | Reading]]] = field(
        default_factory=list
    )
    flying: asyncio.Task[None] | None = None


class Batches:
    """The shared queries of one metrics source. `run` asks the source a query and
    returns Prometheus' `data.result`, or the failure as a Reading."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._lines: dict[str, _Line] = {}

    async def ask(self, plan: Plan, group: tuple[str, ...]) -> Share | Reading:
        """This rollout's share of the grouped answer, as its own query's `data.result`:
        the series whose grouping labels are `group` (in `plan.labels` order)."""
        line = self._lines.setdefault(plan.grouped, _Line(plan))
        answer: asyncio.Future[Share | Reading] = asyncio.get_running_loop().create_future()
        line.waiting.append((group, answer))
        if line.flying is None:
            line.flying = asyncio.create_task(self._fly(plan.grouped, line))
        return await answer

    async def _fly(self, key: str, line: _Line) -> None:
        try:
            while line.waiting:
                batch, line.waiting = line.waiting[:MAX_BATCH], line.waiting[MAX_BATCH:]
                await self._answer(line.plan, batch)
        finally:
            line.flying = None
            if not line.waiting:
                self._lines.pop(key, None)

    async def _answer(
        self,
        plan: Plan,
        batch: list[tuple[tuple[str, ...], asyncio.Future[Share | Reading]]],
    ) -> None:
        values = {label: {group[i] for group, _ in batch} for i, label in enumerate(plan.labels)}
        shares: dict[tuple[str, ...], Share] | Reading
        try:
            result = await self._run(plan.query(values))
            shares = (
                result if isinstance(result, QueryFailed | QueryRejected) else split(plan, result)
            )
        except Exception as error:  # handed to every waiting pass, which reports it
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(error)
            return
        telemetry.GROUPED_ANSWERS.inc(len(batch))
        for group, answer in batch:
            if not answer.done():
                answer.set_result(shares if not isinstance(shares, dict) else shares.get(group, []))


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
