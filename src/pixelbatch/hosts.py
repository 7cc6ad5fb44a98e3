"""Which supplier hosts fail: the top-N report behind ``GET /api/stats/hosts``.

Metrics label a failure by a bounded host class only (``telemetry.hosts``); the hosts by
name are answered here, per tenant, from the images the database recorded failed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from pixelbatch.db import stats
from pixelbatch.db.engine import reading
from pixelbatch.db.models import utcnow
from pixelbatch.runtime import Runtime
from pixelbatch.telemetry.hosts import host_of

# How many recent failures one report reads at most.
SCAN_CAP = 20_000


class HostQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    hours: float = Field(24.0, gt=0, le=24 * 30, description="Look back this many hours")
    limit: int = Field(10, ge=1, le=100, description="Report this many hosts at most")


@dataclass(frozen=True)
class FailingHost:
    host: str
    failures: int
    error_codes: dict[str, int]


def failing_hosts(runtime: Runtime, query: HostQuery, *, tenant: str) -> list[FailingHost]:
    """The hosts with the most failed images of this tenant's batches, most first."""
    since = utcnow() - timedelta(hours=query.hours)
    with reading(runtime.sessions) as session:
        failures = stats.recent_failures(session, tenant, since, SCAN_CAP)
    totals: Counter[str] = Counter()
    codes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for url, code in failures:
        host = host_of(url) or "(no host)"
        totals[host] += 1
        codes[host][code] += 1
    return [
        FailingHost(host, count, dict(codes[host].most_common()))
        for host, count in totals.most_common(query.limit)
    ]
