"""A real Prometheus server for tests, and the PromQL expressions the deploy files hold.

The server is Debian's ``prometheus`` (``make system-packages`` installs it), started on
127.0.0.1 with a temporary configuration that scrapes the given targets every second and
the rules of ``deploy/prometheus/alerts.yml``; queried through its HTTP API, as Grafana would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests import support

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pixelbatch.json"
SCRAPE_SECONDS = 1.0
# What Grafana puts in for its own variables when it runs a panel's query.
_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?")
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$__interval": "5s"}


def executable(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found: make system-packages installs it"
    return found


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every panel target."""
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            yield panel["title"], expr


def alert_expressions() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


class Prometheus:
    """``prometheus`` in a subprocess, scraping ``jobs`` (job name -> host:port targets)."""

    def __init__(self, tmp: Path, jobs: dict[str, list[str]]) -> None:
        self.tmp = tmp
        self.port = support.free_port()
        self.jobs = jobs
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "prometheus.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.tmp.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROMETHEUS_DIR / "alerts.yml", self.tmp / "alerts.yml")
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_SECONDS:g}s",
                "evaluation_interval": f"{SCRAPE_SECONDS:g}s",
            },
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.jobs.items()
            ],
        }
        config_path = self.tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                executable("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(self.base_url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; a PromQL error fails the test with Prometheus's message."""
        response = httpx.get(self.base_url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The single value of a query that must return one series."""
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        """``expr`` summed by ``label``: label value -> value."""
        result = self.query(f"sum by ({label}) ({expr})")
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}

    def scrapes_after(self, count: int = 2) -> None:
        """Wait until every target has been scraped ``count`` times since now, all up."""
        since = time.time()
        deadline = time.monotonic() + 30 + count * SCRAPE_SECONDS * 4
        while time.monotonic() < deadline:
            time.sleep(SCRAPE_SECONDS / 2)
            times = self._scrape_times()
            done = all(t >= since + (count - 1) * SCRAPE_SECONDS for t in times.values())
            if times and done and all(h == "up" for h in self._health().values()):
                return
        raise AssertionError(f"targets not scraped {count} times: {self._health()}")

    def _targets(self) -> list[dict[str, Any]]:
        body = httpx.get(self.base_url + "/api/v1/targets", timeout=10).json()
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        return targets

    def _scrape_times(self) -> dict[str, float]:
        """Target -> when its last scrape started (epoch seconds; 0 before the first)."""
        times = {}
        for target in self._targets():
            match = _TIME_RE.match(target["lastScrape"])
            assert match, target["lastScrape"]
            whole = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp()
            times[target["scrapeUrl"]] = (
                whole + float("0" + (match.group(2) or "")) if whole > 0 else 0.0
            )
        return times

    def _health(self) -> dict[str, str]:
        return {t["scrapeUrl"]: t["health"] for t in self._targets()}

    def wait_until(self, expr: str, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """The query's result once ``predicate`` holds; fails the test if it never does."""
        deadline = time.monotonic() + timeout
        result = self.query(expr)
        while not predicate(result):
            assert time.monotonic() < deadline, f"{expr} never met its condition: {result}"
            time.sleep(SCRAPE_SECONDS)
            result = self.query(expr)
        return result
