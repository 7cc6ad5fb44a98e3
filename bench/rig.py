"""One run's rig: each mode's pools and processes, started and warmed once, stopped once.

Each start warms its mode up, so no measured round pays for process start-up; ``close``
stops whatever was started, also after a failure halfway through the set-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import corpus as corpus_mod
from bench import floor as floor_mod
from bench import procs
from bench.config import CACHE, MODES, Config, log
from bench.distributed import Distributed
from bench.measure import Workload, rate, run_batch, workload
from bench.s3store import MotoServer


def next_redis_db(url: str) -> str:
    """The Redis URL of the next database number (redis://host:port/14 -> /15)."""
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db) if db.isdigit() else 0) + 1}"


@dataclass
class Rig:
    """What the modes of one run share, and where their samples go."""

    cfg: Config
    corpus: corpus_mod.Corpus
    server: procs.ImageServer
    mem: procs.MemWatch
    workdir: Path
    base_env: dict[str, str]
    report: dict[str, Any]
    total: int  # images per measurement
    sub: int  # images for the slow single-process modes
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {m: [] for m in MODES})
    latencies: dict[str, list[float]] = field(default_factory=dict)
    ledger: procs.CpuLedger = field(default_factory=procs.CpuLedger)
    pillow: floor_mod.PillowFloor | None = None
    pillow1: floor_mod.PillowFloor | None = None
    plain: floor_mod.PlainPillow | None = None
    # The second tables: the mixed corpus (PNG and WebP among the JPEGs) and small products.
    mixed: corpus_mod.Corpus | None = None
    small: corpus_mod.Corpus | None = None
    tj_binary: Path | None = None
    embedded: procs.Api | None = None
    embedded_nometrics: procs.Api | None = None
    dist: Distributed | None = None
    dist_s3: Distributed | None = None
    s3: MotoServer | None = None
    # (name, API URL, request id) of the warm-up batches: the idle-status control polls them
    warm_batches: list[tuple[str, str, str]] = field(default_factory=list)

    def paths(self, files: list[corpus_mod.CorpusFile]) -> list[str]:
        return [str(self.corpus.directory / f.name) for f in files]

    def quality_items(self, files: list[corpus_mod.CorpusFile]) -> list[tuple[str, int]]:
        """(path, output quality) of JPEG files, by transform()'s default rule (half the
        source's quality): what the codec floors are asked to write."""
        return [
            (str(self.corpus.directory / f.name), max(1, round((f.quality or 90) * 0.5)))
            for f in files
            if f.format == "jpeg"
        ]

    def batch(self, mode: str, api_url: str, wl: Workload) -> dict[str, Any]:
        """One batch of ``wl`` through an API, upload to final status, as a rate sample."""
        res = run_batch(
            api_url, wl.csv(self.server.bases, self.cfg.images_per_product), self.cfg.status_hz
        )
        self.latencies.setdefault(mode, []).extend(res["latencies_ms"])
        return rate(
            len(wl.files),
            wl.megapixels,
            res["seconds"],
            failed=res["counts"]["images_failed"],
            errors=res["errors"],  # the status's summary: code, count, an example message
            status=res["status"],
            upload_s=round(res["upload_s"], 3),
            bytes_in=res["bytes_in"],
            bytes_out=res["bytes_out"],
            kept_original=res["kept_original"],
            grew=res["grew"],
        )

    def measure(self, mode: str, fn: Callable[[], dict[str, Any]]) -> None:
        self.ledger.start()
        sample = fn()
        sample["cpu"] = self.ledger.stop()
        self.samples.setdefault(mode, []).append(sample)
        log(
            self.cfg,
            f"  {mode:10s} {sample['images']:5d} images "
            f"{sample['seconds']:7.2f} s {sample['images_per_s']:7.2f} img/s "
            f"{sample['mp_per_s']:7.2f} MP/s  cpu {sample['cpu']}",
        )

    def start(self) -> None:
        self.ledger.apart["imageserver"] = self.server.proc.pid
        warm = workload(self.corpus, min(len(self.corpus.files), 8), "warm")
        self._start_floors()
        if {"turbojpeg", "small"} & set(self.cfg.modes):
            self._start_turbojpeg()
        if {"embedded", "priority", "small", "mixed"} & set(self.cfg.modes):
            self.embedded = self._start_embedded(warm, "embedded", {})
        if "embedded_nometrics" in self.cfg.modes:
            self.embedded_nometrics = self._start_embedded(
                warm, "embedded_nometrics", {"PIXELBATCH_METRICS_ENABLED": "false"}
            )
        # The large CSV is measured on both databases (its target is the worst of the two).
        if {"dist1", "dist2", "kill_recovery", "large_csv"} & set(self.cfg.modes):
            self._start_distributed(warm)
        if "dist2s3" in self.cfg.modes:
            self._start_distributed_s3(warm)

    def _start_floors(self) -> None:
        if {"floor", "pillow", "mixed"} & set(self.cfg.modes):
            self.pillow = floor_mod.PillowFloor()
        if "pillow" in self.cfg.modes:
            self.plain = floor_mod.PlainPillow()
            self.plain.warm(self.quality_items(self.corpus.files[: self.plain.workers * 2]))
        self.pillow1 = floor_mod.PillowFloor(1) if "floor1" in self.cfg.modes else None
        if self.pillow1 is not None:
            self.pillow1.warm(self.paths(self.corpus.files[:2]))
        if self.pillow is not None:
            self.pillow.warm(self.paths(self.corpus.files))

    def _start_turbojpeg(self) -> None:
        self.tj_binary, note = floor_mod.build_turbojpeg(CACHE, log=lambda *a: log(self.cfg, *a))
        self.report["turbojpeg_note"] = note
        log(self.cfg, f"turbojpeg floor: {note}")

    def _start_embedded(self, warm: Workload, name: str, extra: dict[str, str]) -> procs.Api:
        env = {**self.base_env, "PIXELBATCH_DATA_DIR": str(self.workdir / f"{name}-data"), **extra}
        api = procs.Api(name, env, self.workdir)
        self.mem.add(f"{name} API (+ transform pool)", api.pid)
        # Its own CPU apart from its transform processes': downloads, recording, claims.
        self.ledger.apart[f"{name}_api"] = api.pid
        res = run_batch(api.base_url, warm.csv(self.server.bases, 3), self.cfg.status_hz)
        self.warm_batches.append((name, api.base_url, res["request_id"]))
        return api

    def _start_distributed(self, warm: Workload) -> None:
        self.dist = Distributed(self.cfg, self.base_env, self.workdir)
        api = self.dist.start_api()
        self.mem.add("distributed API", api.pid)
        self.dist.scale(1)
        self.mem.add("worker w1", self.dist.workers[0].pid)
        res = run_batch(api.base_url, warm.csv(self.server.bases, 3), self.cfg.status_hz)
        self.warm_batches.append(("distributed", api.base_url, res["request_id"]))

    def _start_distributed_s3(self, warm: Workload) -> None:
        """A second distributed stack, identical but for its storage (an S3 bucket) and its
        own database and Redis db; idle while the other stack is measured."""
        self.s3 = MotoServer()
        self.mem.add("S3 server (moto)", self.s3.pid)
        self.dist_s3 = Distributed(
            self.cfg,
            self.base_env,
            self.workdir,
            name="dist-s3",
            storage_env=self.s3.env(),
            redis_url=next_redis_db(self.cfg.redis_url),
        )
        api = self.dist_s3.start_api()
        self.mem.add("distributed API (S3)", api.pid)
        self.dist_s3.scale(1)
        res = run_batch(api.base_url, warm.csv(self.server.bases, 3), self.cfg.status_hz)
        if self.s3.objects(f"outputs/{res['request_id']}/") < len(warm.files) + 2:
            raise RuntimeError("the S3 stack's warm-up batch is not in the bucket")
        self.warm_batches.append(("distributed S3", api.base_url, res["request_id"]))

    def close(self) -> None:
        self.mem.stop()
        for pool in (self.pillow, self.pillow1, self.plain):
            if pool is not None:
                pool.close()
        for api in (self.embedded, self.embedded_nometrics):
            if api is not None:
                api.stop()
        if self.dist is not None:
            self.dist.close()
        if self.dist_s3 is not None:
            self.dist_s3.close()
        if self.s3 is not None:
            self.s3.stop()
        self.server.stop()
