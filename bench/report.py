"""What the samples mean: medians, ratios to the floor, the issue's targets, the printed table.

Works on a partial report too (a run of a few modes): a ratio or target whose modes were
not measured is None / "n/a", never an error.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.measure import pct
from bench.priority import summary as priority_summary


def summarise(
    report: dict[str, Any],
    samples: dict[str, list[dict[str, Any]]],
    latencies: dict[str, list[float]],
    memory: list[dict[str, Any]],
    t_start: float,
) -> None:
    """Fold the raw samples into ``report``: medians per mode, latency percentiles, memory,
    ratios, targets, and how much of the machine other processes took meanwhile."""
    for mode, rows in samples.items():
        if rows:
            report["results"][mode] = {
                "rounds": rows,
                "median_images_per_s": statistics.median(r["images_per_s"] for r in rows),
                "median_mp_per_s": statistics.median(r["mp_per_s"] for r in rows),
                "failed": sum(int(r.get("failed", 0)) for r in rows),
                **sizes(rows),
                # Our processes + PostgreSQL/Redis per image: unlike the rates, it barely
                # moves when other jobs share the machine.
                "median_cpu_ms_per_image": round(
                    statistics.median(
                        1000 * (r["cpu"]["ours"] + r["cpu"]["services"]) / r["images"] for r in rows
                    ),
                    2,
                ),
            }
    for mode, values in latencies.items():
        report["status_latency_ms"][mode] = {
            "n": len(values),
            "p50": round(pct(values, 50), 1),
            "p99": round(pct(values, 99), 1),
            "max": round(max(values), 1) if values else None,
        }
    if samples.get("priority"):
        report["priority"] = priority_summary(samples["priority"])
    report["memory"] = memory
    report["ratios"] = ratios(report["results"])
    report["small_overhead"] = small_overhead(report["results"])
    report["download_ceiling"] = download_ceiling(report)
    report["targets"] = targets(report)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - t_start, 1)
    foreign = sum(r["cpu"]["foreign"] for rows in samples.values() for r in rows)
    walls = sum(r["cpu"]["wall_s"] for rows in samples.values() for r in rows)
    report["foreign_cpu_share"] = round(foreign / max(1e-9, walls * (os.cpu_count() or 1)), 3)
    if report["foreign_cpu_share"] > 0.05:
        report["notes"].append(
            f"other processes used {report['foreign_cpu_share']:.0%} of the machine's CPU "
            "during the measurements: the figures are skewed, rerun on a quiet machine"
        )


def sizes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bytes in -> out and the kept originals of a mode's batches, summed over its rounds
    (absent for modes that run no batch: the floors, naive)."""
    batches = [r for r in rows if r.get("bytes_in") is not None]
    if not batches:
        return {}

    def total(key: str) -> int | None:
        values = [r.get(key) for r in batches]
        return None if any(v is None for v in values) else sum(int(v) for v in values)

    return {
        "batches": len(batches),
        "bytes_in": total("bytes_in"),
        "bytes_out": total("bytes_out"),
        "kept_original": total("kept_original"),
        "grew": total("grew"),
    }


def small_overhead(results: dict[str, Any]) -> dict[str, float] | None:
    """CPU ms per small image, embedded vs the C floor, medians of rounds: what pixelbatch
    spends on top of the codec, split into our processes (API, transform pool, image
    server) and the services (PostgreSQL, Redis)."""
    emb, floor = results.get("small_embedded"), results.get("small_floor")
    if not emb or not floor:
        return None

    def per_image(rows: list[dict[str, Any]], key: str) -> float:
        return 1000 * statistics.median(r["cpu"][key] / r["images"] for r in rows)

    ours, services = per_image(emb["rounds"], "ours"), per_image(emb["rounds"], "services")
    # The image server stands in for the suppliers: its CPU is not pixelbatch's.
    server = (
        per_image(emb["rounds"], "imageserver") if "imageserver" in emb["rounds"][0]["cpu"] else 0.0
    )
    codec = per_image(floor["rounds"], "ours")
    # The API process alone (downloads, recording, claims, status): the rest of "ours" is
    # its transform processes and the bench's own client.
    api = (
        per_image(emb["rounds"], "embedded_api")
        if "embedded_api" in emb["rounds"][0]["cpu"]
        else None
    )
    return {
        "codec_ms": round(codec, 2),
        "embedded_ms": round(ours - server + services, 2),
        "overhead_ms": round(ours - server + services - codec, 2),
        "ours_beyond_codec_ms": round(ours - server - codec, 2),
        "services_ms": round(services, 2),
        "imageserver_ms": round(server, 2),
        **({"api_ms": round(api, 2), "transform_ms": round(ours - server - api, 2)} if api else {}),
    }


def download_ceiling(report: dict[str, Any]) -> dict[str, float] | None:
    """The images per second no client passes on the bench's suppliers: each host serves
    FETCH_PER_HOST downloads at once, each waiting the bench's latency, so at most hosts x
    per_host / latency downloads end per second. When half the small C floor asks more,
    the small-image target measures the bench's suppliers, not pixelbatch's overhead."""
    from pixelbatch.settings import Settings

    config = report["config"]
    if not config.get("latency"):
        return None
    per_host = Settings().fetch_per_host
    ceiling = config["hosts"] * per_host / config["latency"]
    found: dict[str, float] = {
        "hosts": config["hosts"],
        "per_host": per_host,
        "latency_ms": round(1000 * config["latency"]),
        "images_per_s": round(ceiling),
    }
    floor = report["results"].get("small_floor")
    if floor:
        found["small_target_images_per_s"] = round(0.5 * floor["median_images_per_s"])
    return found


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def mp(mode: str) -> float | None:
        r = results.get(mode)
        return r["median_mp_per_s"] if r else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    def cpu(mode: str) -> float | None:
        r = results.get(mode)
        return r.get("median_cpu_ms_per_image") if r else None

    return {
        # The floor is the codec from C with our settings (mode turbojpeg), JPEG only.
        "embedded/C floor": div(mp("embedded"), mp("turbojpeg")),
        "dist2/C floor": div(mp("dist2"), mp("turbojpeg")),
        "embedded/transform()": div(mp("embedded"), mp("floor")),
        "small embedded/small C floor": div(mp("small_embedded"), mp("small_floor")),
        "transform()/plain Pillow (sRGB)": div(mp("transform_srgb"), mp("pillow_srgb")),
        "mixed embedded/mixed transform()": div(mp("mixed_embedded"), mp("mixed_floor")),
        # 1 - this is the metrics' cost in throughput.
        "embedded/embedded_nometrics": div(mp("embedded"), mp("embedded_nometrics")),
        "dist2/transform()": div(mp("dist2"), mp("floor")),
        "dist1/transform()": div(mp("dist1"), mp("floor")),
        "embedded/naive": div(mp("embedded"), mp("naive")),
        "dist2/dist1": div(mp("dist2"), mp("dist1")),
        "dist2 S3/dist2 local disk": div(mp("dist2s3"), mp("dist2")),
        "transform()/C floor": div(mp("floor"), mp("turbojpeg")),
        # The same ratios by CPU per image (codec's CPU / ours): what the rates would be on
        # a machine of our own, where the rates above are skewed by other jobs.
        "CPU: embedded/C floor": div(cpu("turbojpeg"), cpu("embedded")),
        "CPU: embedded/transform()": div(cpu("floor"), cpu("embedded")),
        "CPU: small embedded/small C floor": div(cpu("small_floor"), cpu("small_embedded")),
        "CPU: transform()/plain Pillow (sRGB)": div(cpu("pillow_srgb"), cpu("transform_srgb")),
        "floor/naive (ceiling of embedded/naive)": div(mp("floor"), mp("naive")),
        "floor 2 proc/1 proc (ceiling of 2w/1w)": div(mp("floor"), mp("floor1")),
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    r = report["ratios"]

    def add(name: str, value: float | None, op: str, bound: float) -> None:
        ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append(
            {
                "target": name,
                "value": value,
                "bound": f"{op} {bound}",
                "result": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            }
        )

    add("embedded/C floor", r["embedded/C floor"], ">=", 0.90)
    add("distributed 2 workers/C floor", r["dist2/C floor"], ">=", 0.80)
    add("embedded/transform() on all cores", r["embedded/transform()"], ">=", 0.95)
    add("small images: embedded/C floor", r["small embedded/small C floor"], ">=", 0.50)
    add("transform()/plain Pillow, sRGB+untagged", r["transform()/plain Pillow (sRGB)"], ">=", 0.95)
    add("embedded/naive", r["embedded/naive"], ">=", 4.0)
    add("2 workers/1 worker", r["dist2/dist1"], ">=", 1.8)
    lat = report["status_latency_ms"]
    p99 = max((v["p99"] for k, v in lat.items() if "idle" not in k), default=None)
    add("status p99 while a batch runs (ms, worst mode)", p99, "<=", 50)
    workers = [
        m["peak_rss_mb"]
        for m in report["memory"]
        if str(m["role"]).startswith(("worker", "embedded"))
    ]
    priority = report.get("priority")
    add(
        "10-image high batch under a large one / idle (median)",
        priority["median_busy_over_idle"] if priority else None,
        "<=",
        2.0,
    )
    add("peak RSS per worker process (MB)", max(workers, default=None), "<=", 300)
    kill = report.get("kill_recovery")
    if kill:
        add("kill-recovery delay, 1 of 2 workers SIGKILLed (s)", kill["delay_s"], "<=", 15.0)
    large = report.get("large_csv", {})
    if large:
        rows = next(iter(large.values()))["rows"]
        add(
            f"{rows:,}-row CSV: seconds to 202 (worst mode)",
            max(v["seconds_to_202"] for v in large.values()),
            "<=",
            5.0,
        )
        add(
            f"{rows:,}-row CSV: API memory growth (MB, worst mode)",
            max(v["growth_mb"] for v in large.values()),
            "<=",
            100,
        )
    return out


# --------------------------------------------------------------------------- printing


def print_polls(polls: dict[str, Any] | None) -> None:
    """The API's CPU per status poll and image page, against plain FastAPI (bench/polls.py)."""
    if not polls:
        return
    ms = polls["cpu_ms_per_request"]
    print(
        f"API CPU per request, a finished batch of {polls['images']} images "
        f"({polls['failed']} failed, {polls['error_codes']} error codes; {polls['requests']} "
        f"requests, medians): status poll {ms['status']} ms, first page of 50 images "
        f"{ms['image_page']} ms; a plain FastAPI endpoint on the same uvicorn "
        f"{ms['yardstick']} ms (status {ms['status'] / ms['yardstick']:.2f}x)"
    )


def print_downloads(tables: dict[str, Any]) -> None:
    """CPU per download, ours against urllib3 and libcurl (bench/download.py)."""
    for name, t in tables.items():
        ms = t["cpu_ms_per_request"]
        print(
            f"download CPU per request, {name} table ({t.get('kb_per_request')} KB mean, "
            f"{t['requests']} requests, medians): pixelbatch {ms.get('pixelbatch')} ms; "
            + "; ".join(_download_cell(ms, c) for c in ("urllib3", "libcurl"))
        )


def _download_cell(ms: dict[str, float | None], client: str) -> str:
    ours, theirs = ms.get("pixelbatch"), ms.get(client)
    if theirs is None:
        return f"{client} n/a (pip install '.[bench]')"
    ratio = f" (ours {ours / theirs:.2f}x)" if ours else ""
    return f"{client} {theirs:.3f} ms{ratio}"


def print_sizes(res: dict[str, Any], labels: dict[str, str]) -> None:
    """Never a bigger file: bytes in -> out and kept originals per mode, all rounds."""
    shown = [(labels.get(m, m), r) for m, r in res.items() if r.get("bytes_in")]
    if not shown:
        return
    print("output sizes (all rounds):")
    for label, r in shown:
        kept = "n/a" if r["kept_original"] is None else r["kept_original"]
        grew = "n/a" if r["grew"] is None else r["grew"]
        print(
            f"  {label:<12}{r['bytes_in'] / 1e6:>10.1f} MB in → {r['bytes_out'] / 1e6:>8.1f} MB"
            f" out ({r['bytes_out'] / r['bytes_in']:.1%}); kept originals {kept}, grew {grew}"
        )


def print_report(report: dict[str, Any], path: Path) -> None:
    res = report["results"]
    print()
    print(
        f"pixelbatch benchmark — {report['machine'].get('cpu', '?')}, "
        f"{report['machine']['cpus']} cpus, Pillow {report['machine'].get('pillow')}; "
        f"corpus {report['corpus']['files']} files, "
        f"{report['corpus']['mean_megapixels']} MP mean, "
        f"latency {report['config']['latency'] * 1000:.0f} ms, "
        f"{report['config'].get('hosts', 1)} image hosts"
    )
    print(f"main table: JPEG only {report['corpus'].get('formats')}")
    labels = {
        "floor": "transform()",
        "floor1": "floor 1 proc",
        "turbojpeg": "C floor*",
        "naive": "naive",
        "embedded": "embedded",
        "embedded_nometrics": "emb no metr",
        "dist1": "dist 1 wkr",
        "dist2": "dist 2 wkr",
        "dist2s3": "dist 2 S3",
    }
    print_rows(res, labels)
    if "turbojpeg" in res:
        print("  * libjpeg-turbo from C, our output settings (Huffman optimisation on): the floor")
    print_sizes(res, labels)
    second = {
        "pillow_srgb": "Pillow plain",
        "transform_srgb": "transform()",
    }
    if any(m in res for m in second):
        print("sRGB/untagged JPEGs, all cores:")
        print_rows(res, second)
    small = {"small_floor": "C floor", "small_embedded": "embedded"}
    if any(m in res for m in small):
        print(
            f"small product images ({report.get('corpus_small', {}).get('max_long_side')} px, q90):"
        )
        print_rows(res, small)
        o = report.get("small_overhead")
        if o:
            print(
                f"  CPU per image: codec {o['codec_ms']} ms, embedded {o['embedded_ms']} ms → "
                f"overhead {o['overhead_ms']} ms = our processes {o['ours_beyond_codec_ms']} "
                f"ms beyond the codec + PostgreSQL/Redis {o['services_ms']} ms (the bench's "
                f"image server, not counted: {o.get('imageserver_ms')} ms)"
            )
            if "api_ms" in o:
                print(
                    f"  of which the API process (downloads, recording, claims) {o['api_ms']} ms, "
                    f"its transform processes and the bench's client {o['transform_ms']} ms"
                )
        print_download_ceiling(report.get("download_ceiling"))
    mixed = {"mixed_floor": "transform()", "mixed_embedded": "embedded"}
    if any(m in res for m in mixed):
        print(f"mixed corpus ({report.get('corpus_mixed', {}).get('formats')}):")
        print_rows(res, mixed)
    print_tail(report, path)


def print_download_ceiling(ceiling: dict[str, Any] | None) -> None:
    if not ceiling:
        return
    line = (
        f"  download ceiling: {ceiling['hosts']} hosts x {ceiling['per_host']} connections / "
        f"{ceiling['latency_ms']} ms each = {ceiling['images_per_s']} images/s"
    )
    wanted = ceiling.get("small_target_images_per_s")
    if wanted is not None:
        line += f"; the small target (0.5 x C floor) asks {wanted}"
        if wanted >= ceiling["images_per_s"]:
            line += ": beyond the ceiling, no client reaches it here (raise --hosts)"
    print(line)


def print_rows(res: dict[str, Any], labels: dict[str, str]) -> None:
    # CPU ms/img: our processes + PostgreSQL/Redis per image (median of rounds); unlike the
    # rates it barely moves when other jobs share the machine.
    print(f"{'mode':<14}{'images':>7}{'img/s':>9}{'MP/s':>9}{'CPU ms/img':>12}   rounds (MP/s)")
    for mode, label in labels.items():
        if mode in res:
            r = res[mode]
            rounds = ", ".join(f"{x['mp_per_s']:.1f}" for x in r["rounds"])
            cpu = r.get("median_cpu_ms_per_image", float("nan"))
            print(
                f"{label:<14}{r['rounds'][0]['images']:>7}{r['median_images_per_s']:>9.2f}"
                f"{r['median_mp_per_s']:>9.2f}{cpu:>12.1f}   {rounds}"
                + (f"  ({r['failed']} failed)" if r["failed"] else "")
            )


def print_tail(report: dict[str, Any], path: Path) -> None:
    print()
    print(
        "ratios (MP/s medians): "
        + ", ".join(f"{k} {v:.2f}" for k, v in report["ratios"].items() if v is not None)
    )
    print(
        "status latency (ms): "
        + "; ".join(
            f"{m} p50 {v['p50']} p99 {v['p99']} (n={v['n']})"
            for m, v in report["status_latency_ms"].items()
        )
    )
    print("peak RSS (MB):")
    for m in report["memory"]:
        print(f"  {m['role']:<34}{m['process']:<24} pid {m['pid']:<8}{m['peak_rss_mb']:>8.1f}")
    for mode, v in report.get("large_csv", {}).items():
        print(
            f"large CSV ({mode}): {v['rows']} rows {v['csv_mb']} MB → {v['status_code']} "
            f"in {v['seconds_to_202']} s; API memory growth {v['growth_mb']} MB "
            f"(RSS {v['rss_before_mb']} → {v['rss_after_mb']}); cancel "
            f"{v.get('cancel_attempts')} in {v.get('cancel_s')} s → "
            f"{v.get('status_after_cancel')}; then a status poll "
            f"{v.get('status_latency_ms_p50')} ms, the first page of 50 images "
            f"{v.get('image_page_ms_p50', 'n/a')} ms (medians of 10)"
        )
    print_downloads(report.get("download", {}))
    print_polls(report.get("polls"))
    kill = report.get("kill_recovery")
    if kill:
        print(
            f"kill recovery ({kill['images']} images, {kill['workers']} workers; {kill['killed']}"
            f" at {kill['killed_at_done']} done, back in {kill['restart_s']} s): unkilled "
            f"{kill['unkilled_s']} s, killed {kill['killed_s']} s → delay {kill['delay_s']} s "
            f"(ratio {kill['ratio']})"
        )
    priority = report.get("priority")
    if priority:
        print(
            f"high-priority latency: a {priority['images']}-image high batch takes "
            f"{priority['median_busy_s']:.2f} s while a {priority['big_images']}-image normal "
            f"batch runs vs {priority['median_idle_s']:.2f} s idle (median x"
            f"{priority['median_busy_over_idle']:.2f})"
            + ("" if priority["big_still_running"] else "; the large batch had finished first!")
        )
    print()
    print("targets:")
    for t in report["targets"]:
        value = t["value"]
        shown = "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else value)
        print(f"  {t['result']:<5} {t['target']:<50} {shown:>9}  (target {t['bound']})")
    for note in report["notes"]:
        print(f"note: {note}")
    print(
        f"\nforeign CPU share {report['foreign_cpu_share']:.1%}; elapsed "
        f"{report['elapsed_s']} s; results: {path}"
    )
