"""Prometheus through prometheus-api-client: instant and range queries, each turned
into a Reading the pure core understands.

The client is synchronous; its calls run in the operator's bounded pool. It does
not retry by itself: an unreachable Prometheus is reported at once as a failed
query, and the next analysis tick is the retry.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from modelrollout import telemetry
from modelrollout.core.slo import NoData, QueryFailed, QueryRejected, Reading, classify

T = TypeVar("T")
_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


def _rejection(error: PrometheusApiClientException) -> Reading:
    """Prometheus' own words: 400 means it refused the query (bad PromQL); anything
    else is the server failing, which says nothing about the model."""
    match = _STATUS.match(str(error))
    if match is None:
        return QueryFailed(str(error))
    code, raw = int(match.group(1)), match.group(2)
    text = raw
    try:
        body = json.loads(ast.literal_eval(raw))
        text = str(body.get("error") or body)
    except (ValueError, SyntaxError, TypeError, AttributeError):
        pass
    if code == 400:
        return QueryRejected(text)
    return QueryFailed(f"HTTP {code}: {text}")


class PrometheusSource:
    """One Prometheus endpoint with its credentials."""

    def __init__(
        self,
        address: str,
        *,
        headers: Mapping[str, str] | None,
        timeout_seconds: float,
        pool: Executor,
        ca_file: str | None = None,
    ) -> None:
        session = requests.Session()
        if ca_file is not None:
            session.verify = ca_file
        self._client = PrometheusConnect(
            url=address.rstrip("/"),
            headers=dict(headers or {}),
            retry=Retry(total=0),
            session=session,
            timeout=timeout_seconds,
        )
        self._pool = pool

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _ask(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The decoded `data.result`, or the failure as a Reading."""
        result: Any
        with telemetry.timed(telemetry.QUERY):
            try:
                result = await self._call(fn, *args, **kwargs)
            except PrometheusApiClientException as error:
                result = _rejection(error)
            except (requests.RequestException, OSError) as error:
                name = error.__class__.__name__
                result = QueryFailed(f"Prometheus unreachable: {name}: {error}")
        if isinstance(result, QueryFailed | QueryRejected):
            kind = "rejected" if isinstance(result, QueryRejected) else "failed"
            telemetry.QUERY_ERRORS.labels(kind).inc()
        return result

    async def instant(self, query: str) -> Reading:
        result = await self._ask(self._client.custom_query, query)
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        try:
            return classify(result)
        except ValueError as error:
            return QueryRejected(f"the query must return an instant vector or a scalar: {error}")

    async def vector(self, query: str) -> list[tuple[dict[str, str], float]] | Reading:
        """Every series of an instant vector with its value: histogram buckets and
        category counts, which come as many series by design."""
        result = await self._ask(self._client.custom_query, query)
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        try:
            return [(dict(item["metric"]), float(item["value"][1])) for item in result]
        except (TypeError, KeyError, IndexError, ValueError) as error:
            return QueryRejected(f"the query must return an instant vector: {error}")

    async def series(
        self, query: str, start: datetime, end: datetime, step: str
    ) -> list[float] | Reading:
        """The points of exactly one series over [start, end], or why there are none."""
        result = await self._ask(
            self._client.custom_query_range, query, start_time=start, end_time=end, step=step
        )
        if isinstance(result, QueryFailed | QueryRejected):
            return result
        if not result:
            return NoData("empty")
        if len(result) > 1:
            return NoData("multiple-series")
        points = [float(value) for _, value in result[0].get("values", [])]
        return [p for p in points if math.isfinite(p)]

    def close(self) -> None:
        self._client._session.close()
