"""Smoke test of the benchmark harness (bench/run.py): the quick mode's embedded part on a
tiny generated corpus — no apt packages, no PostgreSQL, nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import cms, gap, recording
from bench import run as bench_run

pytestmark = pytest.mark.timeout(120)


def _quick_run(output: Path, modes: str) -> dict[str, Any]:
    """``bench.run --quick --synthetic`` of ``modes`` (4 products), its report also written
    to ``output``."""
    argv = ["--quick", "--synthetic", "--modes", modes, "--products", "4"]
    cfg = bench_run.parse([*argv, "--output", str(output)])
    cfg.quiet = True
    return bench_run.run(cfg)


def test_quick_embedded_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "results.json"
    report = _quick_run(output, "embedded,embedded_nometrics")

    assert json.loads(output.read_text())["results"].keys() == report["results"].keys()
    for key in ("config", "machine", "corpus", "results", "ratios", "targets", "memory"):
        assert key in report
    assert report["corpus"]["kind"] == "synthetic"
    embedded = report["results"]["embedded"]
    assert embedded["failed"] == 0, [r["errors"] for r in embedded["rounds"]]
    assert embedded["median_images_per_s"] > 0
    assert embedded["median_mp_per_s"] > 0
    assert embedded["rounds"][0]["images"] == 12
    assert embedded["rounds"][0]["status"] == "COMPLETED"
    latency = report["status_latency_ms"]["embedded"]
    assert latency["n"] > 0 and latency["p50"] > 0
    assert any(m["role"].startswith("embedded") and m["peak_rss_mb"] > 0 for m in report["memory"])
    assert {t["target"] for t in report["targets"]} >= {"embedded/C floor", "embedded/naive"}
    # The same server without metrics, same round: the metrics' cost is a ratio of the two.
    assert report["results"]["embedded_nometrics"]["rounds"][0]["status"] == "COMPLETED"
    assert report["ratios"]["embedded/embedded_nometrics"] > 0

    # Never a bigger file, measured: bytes in -> out and the kept originals per mode.
    sample = embedded["rounds"][0]
    assert sample["bytes_in"] > 0 and sample["bytes_out"] > 0
    assert isinstance(sample["kept_original"], int) and isinstance(sample["grew"], int)
    assert embedded["bytes_in"] == sum(r["bytes_in"] for r in embedded["rounds"])
    assert embedded["kept_original"] == sum(r["kept_original"] for r in embedded["rounds"])

    bench_run.print_report(report, output)  # the table renders from a partial report
    printed = capsys.readouterr().out
    assert "output sizes (all rounds):" in printed
    assert f"kept originals {embedded['kept_original']}, grew {embedded['grew']}" in printed


def test_quick_priority_report(tmp_path: Path) -> None:
    """The high-priority latency scenario: a 10-image high batch timed idle and under a
    large normal batch, in the same run; the large batch is cancelled after each round."""
    output = tmp_path / "results.json"
    report = _quick_run(output, "priority")

    priority = report["priority"]
    assert priority["images"] == 10
    assert priority["median_idle_s"] > 0 and priority["median_busy_s"] > 0
    assert priority["big_images"] >= 240
    [sample] = report["results"]["priority"]["rounds"]
    assert sample["status"] == "COMPLETED" and sample["failed"] == 0, sample["errors"]
    assert sample["big_status_when_high_finished"] == "PROCESSING"
    target = "10-image high batch under a large one / idle (median)"
    assert any(t["target"] == target and t["value"] is not None for t in report["targets"])
    bench_run.print_report(report, output)


def test_quick_codec_tables(tmp_path: Path) -> None:
    """The floor is libjpeg-turbo from C with our settings on the JPEG-only corpus, and the
    second tables (sRGB transform() vs plain Pillow, small products, the mixed corpus) each
    print a ratio and a target (compiles bench/floor.py's C source: needs cc and jpeglib.h)."""
    output = tmp_path / "results.json"
    report = _quick_run(output, "turbojpeg,floor,embedded,pillow,small,mixed")

    assert report["corpus"]["formats"] == {"jpeg": 8}  # the main table is JPEG only
    assert set(report["corpus_mixed"]["formats"]) == {"jpeg", "png", "webp"}
    assert report["corpus_small"]["max_long_side"] == 640
    results = report["results"]
    for mode in (
        "turbojpeg",
        "floor",
        "embedded",
        "pillow_srgb",
        "transform_srgb",
        "small_floor",
        "small_embedded",
        "mixed_floor",
        "mixed_embedded",
    ):
        assert results[mode]["median_mp_per_s"] > 0, mode
        assert results[mode]["failed"] == 0, mode
    ratios = report["ratios"]
    for key in (
        "embedded/C floor",
        "embedded/transform()",
        "small embedded/small C floor",
        "transform()/plain Pillow (sRGB)",
    ):
        assert ratios[key] is not None and ratios[key] > 0, key
    assert ratios["CPU: small embedded/small C floor"] > 0
    assert results["small_embedded"]["median_cpu_ms_per_image"] > 0
    overhead = report["small_overhead"]
    assert overhead["codec_ms"] > 0 and overhead["embedded_ms"] > overhead["codec_ms"]
    verdicts = {t["target"]: t["result"] for t in report["targets"]}
    for target in (
        "embedded/C floor",
        "embedded/transform() on all cores",
        "small images: embedded/C floor",
        "transform()/plain Pillow, sRGB+untagged",
    ):
        assert verdicts[target] in ("PASS", "MISS"), target
    bench_run.print_report(report, output)


def test_quick_download_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CPU per download of the Fetcher and the outside clients, from the same server; a
    client that is not installed (libcurl without the bench extra) is reported n/a."""
    output = tmp_path / "results.json"
    report = _quick_run(output, "download")

    tables = report["download"]
    assert set(tables) == {"main", "small"}
    for table in tables.values():
        ms = table["cpu_ms_per_request"]
        assert table["requests"] == 12 and table["kb_per_request"] > 0
        assert ms["pixelbatch"] > 0 and ms["urllib3"] > 0
        assert ms["libcurl"] is None or ms["libcurl"] > 0
    bench_run.print_report(report, output)
    printed = capsys.readouterr().out
    assert "download CPU per request, main table" in printed
    assert f"pixelbatch {tables['small']['cpu_ms_per_request']['pixelbatch']} ms" in printed


def test_quick_polls_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The API's CPU per status poll and image page, and the plain FastAPI yardstick's,
    each measured on its own process, for a finished batch whose images all failed."""
    output = tmp_path / "results.json"
    report = _quick_run(output, "polls")

    polls = report["polls"]
    ms = polls["cpu_ms_per_request"]
    assert polls["images"] == polls["failed"] == 200 and polls["error_codes"] == 2
    assert ms["status"] > 0 and ms["image_page"] > 0 and ms["yardstick"] > 0
    bench_run.print_report(report, output)
    assert f"status poll {ms['status']} ms" in capsys.readouterr().out


def test_gap_groups_the_time_beyond_the_codec(capsys: pytest.CaptureFixture[str]) -> None:
    gap.main(["--synthetic", "--runs", "1"])
    out = capsys.readouterr().out

    assert "plain Pillow" in out and "beyond the codec, of which:" in out
    groups = {line[:19].strip(): line[19:] for line in out.splitlines()[-4:]}
    assert groups.keys() == {"AdobeRGB profile", "EXIF orientation", "sRGB profile", "untagged"}
    assert groups["AdobeRGB profile"].split()[:2] == ["1", "files"]  # one in the synthetic set


def test_gap_times_shrunk_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    gap.main(["--synthetic", "--runs", "1", "--max-width", "300"])
    out = capsys.readouterr().out

    assert "transform(), max_width=300, all" in out
    assert "plain Pillow" not in out


def test_cms_times_both_colour_paths_on_the_same_pixels(capsys: pytest.CaptureFixture[str]) -> None:
    cms.main(["--synthetic", "--runs", "1"])
    out = capsys.readouterr().out.splitlines()

    assert len(out) == 2 and "same pixels" in out[0]  # the synthetic set's one AdobeRGB photo
    assert out[-1].startswith("0.8 MP converted: ImageCms") and "direct" in out[-1]


def test_recording_times_groups_on_both_databases(capsys: pytest.CaptureFixture[str]) -> None:
    recording.main(["--images", "30", "--group", "8", "--rounds", "2"])
    out = capsys.readouterr().out.splitlines()

    assert [line.split()[0] for line in out[1:]] == ["sqlite", "postgresql"]
    for line in out[1:]:  # each round recorded its whole batch, or it would have raised
        assert "groups of 8: CPU" in line and len(line.split("CPU by round: ")[1].split(",")) == 2
