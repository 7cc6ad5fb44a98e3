"""Checks of the monitoring files: Prometheus configs and rules (by ``promtool``), the
Grafana dashboard (the fields Grafana needs to load it) and provisioning, and how
docker-compose.yml and deploy/k8s wire them to the services they scrape.

What the expressions return against live processes is tested with a real Prometheus in
tests/integration/test_prometheus.py and tests/distributed/test_prometheus_cluster.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy_files import (
    ROOT,
    _k8s_object,
    _volume_mounts,
)
from tests.prometheus import dashboard, executable

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row", "heatmap"}
GRID_WIDTH = 24


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-k8s.yml"])
def test_promtool_checks_the_config(name: str) -> None:
    result = _promtool("check", "config", str(PROMETHEUS_DIR / name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 rules found" in result.stdout + result.stderr


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with bad PromQL is refused."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(
        "groups: [{name: x, rules: [{alert: X, expr: 'sum(rate(x[5m])'}]}]\n", encoding="utf-8"
    )
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_alerts_cover_what_an_operator_must_know() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {
        "PixelbatchFailureRateHigh",
        "PixelbatchQueueNotDraining",
        "PixelbatchOldestPendingTooOld",
        "PixelbatchWebhooksFailing",
        "PixelbatchNoWorkerUp",
        "PixelbatchWorkerMemoryNearLimit",
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name


def test_dashboard_has_what_grafana_needs() -> None:
    board = dashboard()
    assert board["uid"] == "pixelbatch" and board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 30
    (variable,) = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        where = panel["title"]
        assert panel["type"] in PANEL_TYPES, where
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid), where
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH and grid["h"] > 0, where
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", where
        assert panel["targets"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
        assert "unit" in panel["fieldConfig"]["defaults"], where


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/pixelbatch.yml").read_text())
    (dashboards,) = provider["providers"]
    assert dashboards["type"] == "file"
    source = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = source["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["isDefault"]
    assert prometheus["url"] == "http://prometheus:9090"


def _scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(path.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_compose_prometheus_scrapes_the_api_and_every_worker(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    jobs = _scrape_jobs(PROMETHEUS_DIR / "prometheus.yml")
    (api,) = jobs["pixelbatch-api"]["dns_sd_configs"]
    assert api["names"] == ["api"] and api["port"] == 8000
    assert "--port" in services["api"]["command"]
    assert services["api"]["command"][services["api"]["command"].index("--port") + 1] == "8000"
    (worker,) = jobs["pixelbatch-worker"]["dns_sd_configs"]
    assert worker["names"] == ["worker"]
    assert services["worker"]["environment"]["PIXELBATCH_METRICS_PORT"] == str(worker["port"])
    # The worker keeps the shared settings besides its metrics port.
    assert "PIXELBATCH_DATABASE_URL" in services["worker"]["environment"]


def test_compose_mounts_the_monitoring_files(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    prometheus = _volume_mounts(services["prometheus"])
    assert Path(prometheus["/etc/prometheus/prometheus.yml"]) == PROMETHEUS_DIR / "prometheus.yml"
    assert Path(prometheus["/etc/prometheus/alerts.yml"]) == PROMETHEUS_DIR / "alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = _volume_mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning"]) == GRAFANA_DIR / "provisioning"
    assert Path(grafana["/var/lib/grafana/dashboards"]) == GRAFANA_DIR / "dashboards"
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} published beyond loopback"


def test_k8s_workers_are_scraped_on_their_metrics_port() -> None:
    config = _k8s_object("ConfigMap", "pixelbatch-config")
    port = int(config["data"]["PIXELBATCH_METRICS_PORT"])
    service = _k8s_object("Service", "pixelbatch-worker-metrics")
    assert service["spec"]["clusterIP"] == "None"
    worker = _k8s_object("Deployment", "pixelbatch-worker")
    template = worker["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[service["spec"]["ports"][0]["targetPort"]] == port
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    (job,) = _scrape_jobs(PROMETHEUS_DIR / "prometheus-k8s.yml")["pixelbatch-worker"][
        "dns_sd_configs"
    ]
    assert job["port"] == port
    assert job["names"][0].startswith("pixelbatch-worker-metrics.pixelbatch.svc")
