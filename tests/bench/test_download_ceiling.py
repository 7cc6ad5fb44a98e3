"""The bench's download ceiling: the rate its suppliers allow any client, and whether the
small-image target lies beyond it (then the target would measure the bench)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report


def _report(hosts: int, small_floor_images_per_s: float | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if small_floor_images_per_s is not None:
        results["small_floor"] = {"median_images_per_s": small_floor_images_per_s}
    return {"config": {"hosts": hosts, "latency": 0.05}, "results": results}


def test_the_ceiling_is_hosts_times_connections_over_latency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIXELBATCH_FETCH_PER_HOST", "6")
    ceiling = report.download_ceiling(_report(8, 966.0))
    assert ceiling == {
        "hosts": 8,
        "per_host": 6,
        "latency_ms": 50,
        "images_per_s": 960,
        "small_target_images_per_s": 483,
    }
    report.print_download_ceiling(ceiling)
    line = capsys.readouterr().out
    assert "= 960 images/s" in line and "asks 483" in line
    assert "beyond the ceiling" not in line


def test_a_target_beyond_the_ceiling_is_called_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIXELBATCH_FETCH_PER_HOST", "6")
    report.print_download_ceiling(report.download_ceiling(_report(4, 966.0)))
    assert "480 images/s" in (out := capsys.readouterr().out)
    assert "beyond the ceiling, no client reaches it here" in out


def test_without_the_small_table_only_the_ceiling_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXELBATCH_FETCH_PER_HOST", "10")
    assert report.download_ceiling(_report(2, None)) == {
        "hosts": 2,
        "per_host": 10,
        "latency_ms": 50,
        "images_per_s": 400,
    }
