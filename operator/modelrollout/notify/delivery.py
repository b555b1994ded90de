"""One HTTP attempt and what it means: delivered, worth retrying, or failed for good.

The request goes through the operator's allowlist session (`AddressPolicy.session()`):
it connects only to allowed addresses, checks the address it actually reached,
follows no redirect and reads no proxy settings from the environment. The response
body is never read: what a receiver says goes nowhere (not into logs, status or
Events), and the error line names the status code or the failure's cause with the
receiver's URL, which often holds a token, taken out.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests

from modelrollout.egress import AddressNotAllowed
from modelrollout.metrics.prometheus import reason
from modelrollout.notify.formats import Body

RETRIED_STATUS = frozenset({408, 429})
_OBJECT_ADDRESS = re.compile(r" object at 0x[0-9a-f]+")


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try. The defaults bound one notification to `attempts` requests
    of at most `timeout` each plus at most about a minute of waiting between them."""

    attempts: int = 5  # requests per notification, the first included
    timeout: float = 5.0  # seconds to connect, and for each read of the response
    backoff: float = 1.0  # the first retry waits between half this and this, in seconds
    backoff_cap: float = 30.0  # no wait from the exponential backoff is longer
    retry_after_cap: float = 60.0  # a receiver's Retry-After is followed up to this
    queue_limit: int = 500  # notifications waiting per receiver; more drop the oldest
    threads: int = 4  # requests in flight at once, over all receivers

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.queue_limit < 1 or self.threads < 1:
            raise ValueError("attempts, queue_limit and threads must be at least 1")
        if min(self.timeout, self.backoff, self.backoff_cap, self.retry_after_cap) <= 0:
            raise ValueError("timeout, backoff and their caps must be positive")

    def backoff_delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (1 for the first): exponential and
        capped, with jitter in its upper half so receivers that failed together do
        not come back together, yet every wait still grows."""
        ceiling = min(self.backoff_cap, self.backoff * 2.0 ** (retry - 1))
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retry: bool  # worth another attempt
    error: str | None = None  # one sanitized line
    retry_after: float | None = None  # seconds the receiver asked us to wait, capped


DELIVERED = Outcome(delivered=True, retry=False)


def post(
    session: requests.Session, url: str, body: Body, policy: DeliveryPolicy, user_agent: str
) -> Outcome:
    """One POST; blocking (run it in a thread), never raises."""
    headers = {"Content-Type": body.content_type, "User-Agent": user_agent}
    try:
        with session.post(
            url,
            data=body.data,
            headers=headers,
            timeout=(policy.timeout, policy.timeout),
            stream=True,  # the body is never read
            allow_redirects=False,
        ) as response:
            return judge_status(response.status_code, response.headers.get("Retry-After"), policy)
    except Exception as error:
        return judge_error(error, url, policy)


def judge_status(code: int, retry_after: str | None, policy: DeliveryPolicy) -> Outcome:
    if 200 <= code < 300:
        return DELIVERED
    if 300 <= code < 400:
        return Outcome(False, False, f"HTTP {code}: redirects are not followed")
    if code in RETRIED_STATUS or code >= 500:
        wait = parse_retry_after(retry_after, datetime.now(UTC))
        capped = None if wait is None else min(wait, policy.retry_after_cap)
        return Outcome(False, True, f"HTTP {code}", capped)
    return Outcome(False, False, f"HTTP {code}")


def judge_error(error: BaseException, url: str, policy: DeliveryPolicy) -> Outcome:
    """Connection errors and timeouts are retried; a refused address, a bad URL or
    anything unexpected is not, as trying again cannot change it."""
    cause = innermost(error)
    if isinstance(cause, AddressNotAllowed):
        return Outcome(False, False, redact(f"address not allowed: {cause}", url))
    if isinstance(error, requests.Timeout):
        return Outcome(False, True, f"timed out after {policy.timeout:g}s")
    line = redact(f"{type(cause).__name__}: {cause}", url)
    if isinstance(error, requests.ConnectionError):
        return Outcome(False, True, line)
    return Outcome(False, False, line)


def innermost(error: BaseException) -> BaseException:
    """The root of the chain requests and urllib3 wrap around a socket error."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None:
            inner = next((a for a in error.args if isinstance(a, BaseException)), None)
        if inner is None:
            break
        error = inner
    return error


def redact(text: str, url: str) -> str:
    """One printable line without the URL, its path or its query (a webhook's path
    or query is often its secret), nor object addresses."""
    for secret in _secrets(url):
        text = text.replace(secret, "<url>")
    return reason(_OBJECT_ADDRESS.sub("", text))


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [url, parts.path, parts.query, f"{parts.path}?{parts.query}"]
    if parts.password:
        found.append(parts.password)
    return sorted({s for s in found if s and s not in ("/", "?")}, key=len, reverse=True)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
