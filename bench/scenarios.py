"""The run: every mode measured in interleaved rounds, one function per mode, then the large CSV.

Interleaving (every mode once per round, medians over rounds) spreads slow drifts of the
machine over all modes instead of skewing whichever mode ran last.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import codec, download, polls, procs
from bench import corpus as corpus_mod
from bench import floor as floor_mod
from bench.config import CACHE, Config, log
from bench.distributed import Distributed
from bench.kill_recovery import measure_kill_recovery
from bench.large_csv import large_csv
from bench.measure import StatusProbe, Workload, rate, subset_count, workload
from bench.priority import measure_priority
from bench.report import summarise
from bench.rig import Rig
from bench.subject import machine_info, use_code


def run(cfg: Config) -> dict[str, Any]:
    t_start = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    code = use_code(cfg)
    log(cfg, f"measuring pixelbatch from {code}")
    everything = corpus_mod.build(cfg.corpus, log=lambda *a: log(cfg, *a))
    # The main table is JPEG only (the codec floor's ground); mixed and small are second tables.
    corpus = everything.group("jpeg")
    total = cfg.products * cfg.images_per_product
    sub = subset_count(cfg, corpus, total)
    log(cfg, f"corpus: {json.dumps(corpus.summary())}")
    log(
        cfg,
        f"{total} images per measurement ({sub} for naive and 1 worker); "
        f"{cfg.rounds} round(s); {cfg.hosts} image hosts; latency {cfg.latency * 1000:.0f} ms; "
        "bandwidth "
        f"{cfg.bandwidth_mbps or 'unpaced'} Mbit/s per connection",
    )

    report: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": machine_info(),
        "code": code,
        "corpus": corpus.summary(),
        "results": {},
        "status_latency_ms": {},
        "memory": [],
        "notes": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    server = procs.ImageServer(
        corpus.directory, cfg.latency, cfg.bandwidth_mbps * 125_000, cfg.hosts
    )
    mem = procs.MemWatch().start()
    base_env = {
        **os.environ,
        "PIXELBATCH_FETCH_ALLOW": server.allow,
        "PIXELBATCH_FETCH_ALLOWED_PORTS": str(server.port),
        **cfg.extra_env,
    }
    base_env.pop("PIXELBATCH_BROKER_URL", None)
    base_env.pop("PIXELBATCH_DATABASE_URL", None)
    rig = Rig(cfg, corpus, server, mem, workdir, base_env, report, total, sub)
    rig.mixed, rig.small = everything.group("mixed"), everything.group("small")
    report["corpus_mixed"], report["corpus_small"] = rig.mixed.summary(), rig.small.summary()
    try:
        rig.start()
        for r in range(cfg.rounds):
            measure_round(rig, r)
        if "kill_recovery" in cfg.modes and rig.dist is not None and rig.dist.api is not None:
            log(cfg, "--- kill recovery")
            rig.report["kill_recovery"] = measure_kill_recovery(rig, rig.dist, rig.dist.api)
        if "large_csv" in cfg.modes:
            measure_large_csv(rig)
        if "download" in cfg.modes:
            measure_downloads(rig)
        if "polls" in cfg.modes:
            log(cfg, "--- polls")
            rig.report["polls"] = polls.measure(
                rig.server, rig.base_env, rig.workdir, cfg.rounds, quick=cfg.corpus != "full"
            )
    finally:
        rig.close()

    summarise(report, rig.samples, rig.latencies, mem.report(), t_start)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=1, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    return report


def measure_round(rig: Rig, r: int) -> None:
    log(rig.cfg, f"--- round {r + 1}/{rig.cfg.rounds}")
    main = workload(rig.corpus, rig.total, f"r{r}")
    small = workload(rig.corpus, rig.sub, f"r{r}s")
    if rig.pillow is not None and "floor" in rig.cfg.modes:
        measure_floor(rig, rig.pillow, main)
    if rig.pillow1 is not None:
        measure_floor1(rig, rig.pillow1, r)
    if rig.tj_binary is not None and "turbojpeg" in rig.cfg.modes:
        measure_turbojpeg(rig, rig.tj_binary, main)
    if "naive" in rig.cfg.modes:
        measure_naive(rig, r, small)
    embedded = [("embedded", rig.embedded), ("embedded_nometrics", rig.embedded_nometrics)]
    # With and without metrics back to back, in alternating order: neither always goes first.
    for mode, api in embedded if r % 2 == 0 else embedded[::-1]:
        if api is not None and mode in rig.cfg.modes:
            rig.measure(mode, functools.partial(_batch, rig, mode, api.base_url, main))
    if rig.embedded is not None and "priority" in rig.cfg.modes:
        measure_priority(rig, r)
    if rig.dist is not None and rig.dist.api is not None:
        measure_distributed(rig, rig.dist, rig.dist.api, small, main)
    if rig.dist_s3 is not None and rig.dist_s3.api is not None:
        measure_distributed_s3(rig, rig.dist_s3, rig.dist_s3.api, main)
    codec.measure_second_tables(rig, r)


def measure_floor(rig: Rig, pillow: floor_mod.PillowFloor, wl: Workload) -> None:
    """Pillow alone on every core: what pixelbatch could reach at best."""
    paths = rig.paths(wl.files)
    # Control: the status endpoint of idle APIs while only the floor loads the CPU. If it
    # is as slow as during a batch, the cause is CPU starvation.
    control = StatusProbe(
        rig.cfg.status_hz, [(name, url, rid) for name, url, rid in rig.warm_batches if url]
    )
    control.start()
    try:
        rig.measure("floor", lambda: rate(rig.total, wl.megapixels, pillow.run(paths)))
    finally:
        for name, values in control.stop().items():
            rig.latencies.setdefault(f"{name} idle, floor running", []).extend(values)


def measure_floor1(rig: Rig, pillow1: floor_mod.PillowFloor, r: int) -> None:
    """Pillow in one process: the ceiling of what a second worker can add."""
    one = workload(rig.corpus, len(rig.corpus.files), f"r{r}one")
    one_paths = rig.paths(one.files)
    rig.measure(
        "floor1",
        lambda: rate(len(one_paths), one.megapixels, pillow1.run(one_paths), note="1 process"),
    )


def measure_turbojpeg(rig: Rig, tj_binary: Path, wl: Workload) -> None:
    """libjpeg-turbo from C with our output settings: the bench's floor."""
    jpegs = [f for f in wl.files if f.format == "jpeg"]
    items = rig.quality_items(jpegs)
    rig.measure(
        "turbojpeg",
        lambda: rate(
            len(items),
            sum(f.megapixels for f in jpegs),
            floor_mod.turbojpeg_floor(tj_binary, items, rig.workdir),
            note="libjpeg from C, our settings (Huffman optimisation on)",
        ),
    )


def measure_naive(rig: Rig, r: int, wl: Workload) -> None:
    """The naive tool (bench/naive.py), a fresh process each round, as a user would run it."""

    def naive() -> dict[str, Any]:
        url_file = rig.workdir / f"naive-{r}.txt"
        url_file.write_text("\n".join(wl.urls(rig.server.bases)))
        proc = subprocess.Popen(
            [
                procs.python(),
                "-m",
                "bench.naive",
                str(url_file),
                str(rig.workdir / "naive-out"),
            ],
            cwd=procs.ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        rig.mem.add("naive", proc.pid)
        out, _ = proc.communicate(timeout=1800)
        rig.mem.sample()
        res = json.loads(out.strip().splitlines()[-1])
        return rate(rig.sub, wl.megapixels, res["seconds"], failed=res["failed"])

    rig.measure("naive", naive)


def measure_distributed(
    rig: Rig, dist: Distributed, api: procs.Api, small: Workload, main: Workload
) -> None:
    """API, PostgreSQL, Redis and Celery workers: 1 worker on the small set, then 2 on all."""
    for n_workers, mode, wl in ((1, "dist1", small), (2, "dist2", main)):
        if mode not in rig.cfg.modes:
            continue
        dist.scale(n_workers)
        for i, w in enumerate(dist.workers):
            rig.mem.add(f"worker w{i + 1}", w.pid)
        rig.measure(mode, functools.partial(_batch, rig, mode, api.base_url, wl))
    dist.scale(1)


def measure_distributed_s3(rig: Rig, dist: Distributed, api: procs.Api, main: Workload) -> None:
    """dist2 again, the outputs, input and output CSVs going to an S3 bucket (moto's server
    on this machine) instead of a directory: what object storage costs the workers."""
    dist.scale(2)
    for i, w in enumerate(dist.workers):
        rig.mem.add(f"worker S3 w{i + 1}", w.pid)
    rig.measure("dist2s3", functools.partial(_batch, rig, "dist2s3", api.base_url, main))
    dist.scale(1)


def _batch(rig: Rig, mode: str, api_url: str, wl: Workload) -> dict[str, Any]:
    return rig.batch(mode, api_url, wl)


def measure_downloads(rig: Rig) -> None:
    """CPU per download of the main and the small table's files: pixelbatch's Fetcher,
    urllib3 and libcurl, each in a process of its own, interleaved over the rounds."""
    log(rig.cfg, "--- downloads")
    tables = {"main": rig.corpus}
    if rig.small is not None:
        tables["small"] = rig.small
    rig.report["download"] = {
        name: download.measure(
            workload(corpus, rig.total, f"dl-{name}").urls(rig.server.bases),
            rig.base_env,
            rig.cfg.rounds,
        )
        for name, corpus in tables.items()
    }


def measure_large_csv(rig: Rig) -> None:
    """The 100,000-row CSV, against a fresh API process of each mode."""
    rig.report["large_csv"] = {}
    env = {**rig.base_env, "PIXELBATCH_DATA_DIR": str(rig.workdir / "large-data")}
    rig.report["large_csv"]["embedded"] = large_csv(
        rig.cfg, rig.server, env, rig.workdir, "large-emb"
    )
    if rig.dist is not None:
        rig.report["large_csv"]["distributed"] = large_csv(
            rig.cfg, rig.server, rig.dist.env, rig.workdir, "large-dist"
        )
